//! Recursive-descent parser from tokens to [`Ast`], with SQL precedence:
//! OR < AND < NOT < comparisons (=, <>, IS NULL, BETWEEN, IN, LIKE) < || < + - < * / % < unary -.
//!
//! Depth is bounded (nesting and operator chains) so that hostile input cannot overflow the
//! stack in the parser, the binder, the evaluator or a recursive drop.

use super::ast::{is_reserved, Ast, AstKind, BinaryOp, StringLength, UnaryOp};
use super::lexer::{tokenize, Tok, Token};
use super::ExprError;
use crate::types::{parse_timestamp, DataType, Decimal, Value};
use std::ops::Range;

/// The deepest expression tree accepted; far beyond what people write, far below stack limits.
pub(crate) const MAX_DEPTH: usize = 256;
/// How many parentheses / nested constructs may be open at once while parsing.
const MAX_NESTING: usize = 64;
/// The largest CHAR(n): every value is padded to n characters, so huge n would exhaust memory.
const MAX_CHAR_LENGTH: u32 = 65_535;

pub(crate) struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

fn too_deep(span: Range<usize>) -> ExprError {
    ExprError::new(
        format!("expression is nested too deeply (more than {MAX_DEPTH} levels)"),
        span,
    )
    .with_help("split it into several simpler expressions")
}

impl<'t> Parser<'t> {
    pub(crate) fn new(text: &'t str) -> Result<Self, ExprError> {
        Ok(Parser {
            text,
            tokens: tokenize(text)?,
            pos: 0,
            nesting: 0,
        })
    }

    // ---- token helpers ------------------------------------------------------------------------

    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + n).min(last)]
    }

    fn advance(&mut self) -> Token {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(&self.peek_at(n).tok, Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.kw_at(0, kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str, context: &str) -> Result<Range<usize>, ExprError> {
        if self.is_kw(kw) {
            Ok(self.advance().span)
        } else {
            Err(self.unexpected(&format!("expected {kw} {context}")))
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Range<usize>, ExprError> {
        if self.peek().tok == tok {
            Ok(self.advance().span)
        } else {
            Err(self.unexpected(&format!("expected {what}")))
        }
    }

    /// "expected X, found Y" at the current token.
    fn unexpected(&self, expected: &str) -> ExprError {
        let token = self.peek();
        ExprError::new(
            format!("{expected}, found {}", self.describe(token)),
            token.span.clone(),
        )
    }

    fn describe(&self, token: &Token) -> String {
        match &token.tok {
            Tok::Eof => "the end of the expression".to_string(),
            Tok::Str(_) => format!("string {}", &self.text[token.span.clone()]),
            Tok::Ident(w) if is_reserved(w) => format!("keyword `{}`", w.to_ascii_uppercase()),
            _ => format!("`{}`", &self.text[token.span.clone()]),
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(too_deep(self.peek().span.clone()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    // ---- entry points -------------------------------------------------------------------------

    /// Parses one expression at the lowest precedence, guarding the nesting depth.
    pub(crate) fn parse_expr(&mut self) -> Result<Ast, ExprError> {
        self.enter()?;
        let result = self.parse_binary(PREC_OR);
        self.leave();
        result
    }

    /// Fails unless all input was consumed, naming the first unconsumed token.
    pub(crate) fn expect_end(&mut self) -> Result<(), ExprError> {
        let token = self.peek();
        if token.tok == Tok::Eof {
            return Ok(());
        }
        let mut err = ExprError::new(
            format!(
                "unexpected {} after the end of the expression",
                self.describe(token)
            ),
            token.span.clone(),
        );
        if token.tok == Tok::RParen {
            err = err.with_help("this `)` has no matching `(`");
        } else if !matches!(token.tok, Tok::Comma) {
            err = err.with_help("is an operator or a comma missing?");
        }
        Err(err)
    }

    /// `[AS] alias` after a select item, if present.
    pub(crate) fn parse_alias(&mut self) -> Result<Option<String>, ExprError> {
        let explicit = self.eat_kw("AS");
        match &self.peek().tok {
            Tok::QuotedIdent(name) => {
                let name = name.clone();
                self.advance();
                Ok(Some(name))
            }
            Tok::Ident(name) if !is_reserved(name) => {
                let name = name.clone();
                self.advance();
                Ok(Some(name))
            }
            _ if explicit => Err(self.unexpected("expected a column alias after AS")),
            _ => Ok(None),
        }
    }

    // ---- operators (precedence climbing) -----------------------------------------------------
    //
    // Functions on the recursion path (parse_binary, parse_prefix, parse_primary, parse_infix)
    // stay small and hand everything else to helpers, so that each nesting level costs little
    // stack even in debug builds.

    /// The infix or postfix operator at the current token: (precedence, operator).
    fn peek_infix(&self) -> Option<(u8, Infix)> {
        let infix = match &self.peek().tok {
            Tok::Eq => Infix::Binary(BinaryOp::Eq),
            Tok::Ne => Infix::Binary(BinaryOp::NotEq),
            Tok::Lt => Infix::Binary(BinaryOp::Lt),
            Tok::Le => Infix::Binary(BinaryOp::LtEq),
            Tok::Gt => Infix::Binary(BinaryOp::Gt),
            Tok::Ge => Infix::Binary(BinaryOp::GtEq),
            Tok::Concat => Infix::Binary(BinaryOp::Concat),
            Tok::Plus => Infix::Binary(BinaryOp::Add),
            Tok::Minus => Infix::Binary(BinaryOp::Sub),
            Tok::Star => Infix::Binary(BinaryOp::Mul),
            Tok::Slash => Infix::Binary(BinaryOp::Div),
            Tok::Percent => Infix::Binary(BinaryOp::Mod),
            Tok::Ident(w) => match w.to_ascii_uppercase().as_str() {
                "OR" => Infix::Binary(BinaryOp::Or),
                "AND" => Infix::Binary(BinaryOp::And),
                "IS" => Infix::IsNull,
                "BETWEEN" => Infix::Between(false),
                "IN" => Infix::In(false),
                "LIKE" => Infix::Like(false),
                "NOT" if self.kw_at(1, "BETWEEN") => Infix::Between(true),
                "NOT" if self.kw_at(1, "IN") => Infix::In(true),
                "NOT" if self.kw_at(1, "LIKE") => Infix::Like(true),
                _ => return None,
            },
            _ => return None,
        };
        let prec = match infix {
            Infix::Binary(op) => binary_precedence(op),
            _ => PREC_COMPARISON,
        };
        Some((prec, infix))
    }

    /// Parses operators of at least `min_prec`, left-associatively.
    fn parse_binary(&mut self, min_prec: u8) -> Result<Ast, ExprError> {
        let mut left = self.parse_prefix(min_prec)?;
        let mut depth = None;
        while let Some((prec, infix)) = self.peek_infix() {
            if prec < min_prec {
                break;
            }
            left = self.parse_infix(left, prec, infix, &mut depth)?;
        }
        Ok(left)
    }

    fn parse_infix(
        &mut self,
        left: Ast,
        prec: u8,
        infix: Infix,
        depth: &mut Option<usize>,
    ) -> Result<Ast, ExprError> {
        if matches!(
            infix,
            Infix::Between(true) | Infix::In(true) | Infix::Like(true)
        ) {
            self.advance(); // NOT
        }
        self.advance(); // the operator
        match infix {
            Infix::Binary(op) => {
                let right = self.parse_binary(prec + 1)?;
                self.join(depth, op, left, right)
            }
            Infix::IsNull => self.parse_is_null(left, depth),
            Infix::Between(negated) => self.parse_between(left, negated, depth),
            Infix::In(negated) => self.parse_in(left, negated, depth),
            Infix::Like(negated) => self.parse_like(left, negated, depth),
        }
    }

    /// Joins `left op right`, keeping track of the tree depth so that long operator chains
    /// cannot build a tree too deep to evaluate or drop.
    fn join(
        &self,
        depth: &mut Option<usize>,
        op: BinaryOp,
        left: Ast,
        right: Ast,
    ) -> Result<Ast, ExprError> {
        let d = depth.get_or_insert_with(|| left.depth());
        *d = (*d).max(right.depth()) + 1;
        let span = left.span.start..right.span.end;
        if *d > MAX_DEPTH {
            return Err(too_deep(span));
        }
        Ok(Ast::new(
            AstKind::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
            span,
        ))
    }

    /// Wraps `left` (already inside `kind`) in a postfix node, checking depth like `join`.
    fn postfix(
        &self,
        depth: &mut Option<usize>,
        kind: AstKind,
        span: Range<usize>,
    ) -> Result<Ast, ExprError> {
        let node = Ast::new(kind, span.clone());
        let children = node.children();
        let left_depth = match depth {
            Some(d) => *d,
            None => children.first().map_or(0, |c| c.depth()),
        };
        let d = children
            .iter()
            .skip(1)
            .map(|c| c.depth())
            .fold(left_depth, usize::max)
            + 1;
        *depth = Some(d);
        if d > MAX_DEPTH {
            return Err(too_deep(span));
        }
        Ok(node)
    }

    fn parse_is_null(&mut self, left: Ast, depth: &mut Option<usize>) -> Result<Ast, ExprError> {
        let negated = self.eat_kw("NOT");
        let end = self
            .expect_kw("NULL", if negated { "after IS NOT" } else { "after IS" })?
            .end;
        let span = left.span.start..end;
        self.postfix(
            depth,
            AstKind::IsNull {
                expr: Box::new(left),
                negated,
            },
            span,
        )
    }

    fn parse_between(
        &mut self,
        left: Ast,
        negated: bool,
        depth: &mut Option<usize>,
    ) -> Result<Ast, ExprError> {
        let low = self.parse_binary(PREC_COMPARISON + 1)?;
        self.expect_kw("AND", "between the bounds of BETWEEN")?;
        let high = self.parse_binary(PREC_COMPARISON + 1)?;
        let span = left.span.start..high.span.end;
        self.postfix(
            depth,
            AstKind::Between {
                expr: Box::new(left),
                low: Box::new(low),
                high: Box::new(high),
                negated,
            },
            span,
        )
    }

    fn parse_in(
        &mut self,
        left: Ast,
        negated: bool,
        depth: &mut Option<usize>,
    ) -> Result<Ast, ExprError> {
        self.expect(Tok::LParen, "`(` after IN")?;
        if self.peek().tok == Tok::RParen {
            return Err(self.unexpected("expected at least one value in the IN list"));
        }
        let mut list = Vec::new();
        loop {
            list.push(self.parse_expr()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        let end = self.expect(Tok::RParen, "`,` or `)` in the IN list")?.end;
        let span = left.span.start..end;
        self.postfix(
            depth,
            AstKind::InList {
                expr: Box::new(left),
                list,
                negated,
            },
            span,
        )
    }

    fn parse_like(
        &mut self,
        left: Ast,
        negated: bool,
        depth: &mut Option<usize>,
    ) -> Result<Ast, ExprError> {
        let pattern = self.parse_binary(PREC_COMPARISON + 1)?;
        let mut end = pattern.span.end;
        let mut escape = None;
        if self.eat_kw("ESCAPE") {
            let token = self.advance();
            let mut chars = match &token.tok {
                Tok::Str(s) => s.chars(),
                _ => {
                    return Err(ExprError::new(
                        "expected a one-character string after ESCAPE",
                        token.span,
                    ))
                }
            };
            match (chars.next(), chars.next()) {
                (Some(c), None) => escape = Some(c),
                _ => {
                    return Err(ExprError::new(
                        "the ESCAPE string must be exactly one character",
                        token.span,
                    ))
                }
            }
            end = token.span.end;
        }
        let span = left.span.start..end;
        self.postfix(
            depth,
            AstKind::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                escape,
                negated,
            },
            span,
        )
    }

    /// Prefix operators: NOT (below comparisons) and unary minus / plus (above `*`).
    fn parse_prefix(&mut self, min_prec: u8) -> Result<Ast, ExprError> {
        let prefix = match &self.peek().tok {
            Tok::Minus => Some(UnaryOp::Neg),
            Tok::Plus => None,
            Tok::Ident(w) if min_prec <= PREC_NOT && w.eq_ignore_ascii_case("NOT") => {
                Some(UnaryOp::Not)
            }
            _ => return self.parse_primary(),
        };
        let start = self.advance().span.start;
        if prefix == Some(UnaryOp::Neg)
            && matches!(self.peek().tok, Tok::Integer | Tok::Decimal | Tok::Double)
        {
            return self.negative_number(start);
        }
        self.enter()?;
        let operand = self.parse_binary(if prefix == Some(UnaryOp::Not) {
            PREC_NOT
        } else {
            PREC_UNARY
        });
        self.leave();
        let mut operand = operand?;
        Ok(match prefix {
            None => {
                operand.span.start = start;
                operand
            }
            Some(op) => {
                let span = start..operand.span.end;
                Ast::new(
                    AstKind::Unary {
                        op,
                        expr: Box::new(operand),
                    },
                    span,
                )
            }
        })
    }

    fn negative_number(&mut self, start: usize) -> Result<Ast, ExprError> {
        let token = self.advance();
        let value = self.number(&token, true)?;
        Ok(Ast::new(AstKind::Literal(value), start..token.span.end))
    }

    // ---- primary expressions ------------------------------------------------------------------

    fn number(&self, token: &Token, negate: bool) -> Result<Value, ExprError> {
        let text = &self.text[token.span.clone()];
        let span = token.span.clone();
        match token.tok {
            Tok::Integer => {
                let magnitude: i128 = text.parse().map_err(|_| out_of_range(span.clone()))?;
                let v = if negate { -magnitude } else { magnitude };
                i64::try_from(v)
                    .map(Value::Int)
                    .map_err(|_| out_of_range(span))
            }
            Tok::Decimal => {
                let d = Decimal::parse(text).ok_or_else(|| {
                    ExprError::new(
                        format!("decimal literal {text} has more digits than fit in 18"),
                        span,
                    )
                    .with_help("write it as a DOUBLE with an exponent, e.g. 1.5e3")
                })?;
                Ok(Value::Decimal(if negate {
                    Decimal {
                        unscaled: -d.unscaled,
                        scale: d.scale,
                    }
                } else {
                    d
                }))
            }
            _ => {
                let v: f64 = text
                    .parse()
                    .map_err(|_| ExprError::new(format!("invalid number `{text}`"), span))?;
                Ok(Value::Float(if negate { -v } else { v }))
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Ast, ExprError> {
        match &self.peek().tok {
            Tok::Integer | Tok::Decimal | Tok::Double => {
                let token = self.advance();
                let value = self.number(&token, false)?;
                Ok(Ast::new(AstKind::Literal(value), token.span))
            }
            Tok::Str(_) => self.parse_string(),
            Tok::LParen => self.parse_parenthesized(),
            Tok::QuotedIdent(_) | Tok::Ident(_) => self.parse_word(),
            Tok::Star => Err(self
                .unexpected("expected an expression")
                .with_help("`*` is only allowed in COUNT(*)")),
            _ => Err(self.unexpected("expected an expression")),
        }
    }

    fn parse_string(&mut self) -> Result<Ast, ExprError> {
        let token = self.advance();
        match token.tok {
            Tok::Str(s) => Ok(Ast::new(AstKind::Literal(Value::str(&s)), token.span)),
            _ => Err(ExprError::new("expected a string", token.span)),
        }
    }

    fn parse_parenthesized(&mut self) -> Result<Ast, ExprError> {
        let open = self.advance().span;
        let inner = self.parse_expr()?;
        let end = self
            .expect(Tok::RParen, "`)`")
            .map_err(|e| e.with_help(format!("the `(` at offset {} is not closed", open.start)))?
            .end;
        Ok(Ast::new(inner.kind, open.start..end))
    }

    /// An identifier: a keyword-introduced construct, a function call or a column.
    fn parse_word(&mut self) -> Result<Ast, ExprError> {
        let token = self.peek().clone();
        let word = match token.tok {
            Tok::QuotedIdent(name) => {
                self.advance();
                return self.parse_column(name, token.span);
            }
            Tok::Ident(word) => word,
            _ => return Err(self.unexpected("expected a name")),
        };
        let upper = word.to_ascii_uppercase();
        let next = self.peek_at(1).tok.clone();
        match upper.as_str() {
            "TRUE" | "FALSE" | "NULL" => {
                self.advance();
                let v = match upper.as_str() {
                    "TRUE" => Value::Bool(true),
                    "FALSE" => Value::Bool(false),
                    _ => Value::Null,
                };
                Ok(Ast::new(AstKind::Literal(v), token.span))
            }
            "CASE" => self.parse_case(),
            "INTERVAL" if matches!(next, Tok::Str(_) | Tok::Integer | Tok::Minus) => {
                self.parse_interval()
            }
            "TIMESTAMP" if matches!(next, Tok::Str(_)) => self.parse_timestamp_literal(),
            "CAST" if next == Tok::LParen => self.parse_cast(),
            "EXTRACT" if next == Tok::LParen => self.parse_extract(),
            _ if next == Tok::LParen && !is_reserved(&word) => self.parse_call(),
            _ if is_reserved(&word) => Err(self.unexpected("expected an expression").with_help(
                format!("write `{word}` in backquotes if it is a column name"),
            )),
            _ => {
                self.advance();
                self.parse_column(word, token.span)
            }
        }
    }

    /// A column, `name` or `qualifier.name`; the first part was consumed already.
    fn parse_column(&mut self, first: String, span: Range<usize>) -> Result<Ast, ExprError> {
        if !self.eat(&Tok::Dot) {
            return Ok(Ast::new(
                AstKind::Column {
                    qualifier: None,
                    name: first,
                },
                span,
            ));
        }
        let token = self.advance();
        let name = match token.tok {
            Tok::Ident(n) | Tok::QuotedIdent(n) => n,
            _ => {
                return Err(ExprError::new(
                    format!("expected a column name after `{first}.`"),
                    token.span,
                ))
            }
        };
        if self.peek().tok == Tok::Dot {
            return Err(ExprError::new(
                "names with more than one qualifier (`a.b.c`) are not supported",
                span.start..self.peek().span.end,
            ));
        }
        Ok(Ast::new(
            AstKind::Column {
                qualifier: Some(first),
                name,
            },
            span.start..token.span.end,
        ))
    }

    fn parse_call(&mut self) -> Result<Ast, ExprError> {
        let name_token = self.advance();
        let name = self.text[name_token.span.clone()].to_ascii_lowercase();
        let start = name_token.span.start;
        self.advance(); // `(`
        let mut args = Vec::new();
        let mut distinct = false;
        let mut star = false;
        if self.peek().tok == Tok::Star && self.peek_at(1).tok == Tok::RParen {
            self.advance();
            star = true;
        } else if self.peek().tok != Tok::RParen {
            distinct = self.eat_kw("DISTINCT");
            if !distinct && self.is_kw("ALL") && self.peek_at(1).tok != Tok::LParen {
                self.advance();
            }
            let first = self.parse_expr()?;
            args.push(first);
            if matches!(name.as_str(), "substring" | "substr") && self.eat_kw("FROM") {
                args.push(self.parse_expr()?);
                if self.eat_kw("FOR") {
                    args.push(self.parse_expr()?);
                }
            } else {
                while self.eat(&Tok::Comma) {
                    args.push(self.parse_expr()?);
                }
            }
        }
        let mut end = self
            .expect(
                Tok::RParen,
                &format!(
                    "`,` or `)` in the arguments of {}",
                    name.to_ascii_uppercase()
                ),
            )?
            .end;
        let mut filter = None;
        if self.is_kw("FILTER") && self.peek_at(1).tok == Tok::LParen {
            self.advance();
            self.advance();
            self.expect_kw("WHERE", "in FILTER (WHERE ...)")?;
            filter = Some(Box::new(self.parse_expr()?));
            end = self.expect(Tok::RParen, "`)` to close FILTER")?.end;
        }
        Ok(Ast::new(
            AstKind::Call {
                name,
                args,
                distinct,
                star,
                filter,
            },
            start..end,
        ))
    }

    fn parse_case(&mut self) -> Result<Ast, ExprError> {
        let start = self.advance().span.start;
        let operand = if self.is_kw("WHEN") {
            None
        } else {
            Some(Box::new(self.parse_expr()?))
        };
        let mut branches = Vec::new();
        while self.eat_kw("WHEN") {
            let when = self.parse_expr()?;
            self.expect_kw("THEN", "after the WHEN condition")?;
            let then = self.parse_expr()?;
            branches.push((when, then));
        }
        if branches.is_empty() {
            return Err(self.unexpected("expected WHEN in CASE"));
        }
        let else_ = if self.eat_kw("ELSE") {
            Some(Box::new(self.parse_expr()?))
        } else {
            None
        };
        let end = self
            .expect_kw("END", "to close CASE")
            .map_err(|e| e.with_help("every CASE ends with END"))?
            .end;
        Ok(Ast::new(
            AstKind::Case {
                operand,
                branches,
                else_,
            },
            start..end,
        ))
    }

    fn parse_interval(&mut self) -> Result<Ast, ExprError> {
        let start = self.advance().span.start;
        let token = self.advance();
        let (text, value_span) = match &token.tok {
            Tok::Str(s) => (s.trim().to_string(), token.span.clone()),
            Tok::Minus => {
                let number = self.advance();
                if number.tok != Tok::Integer {
                    return Err(ExprError::new(
                        "expected a number after INTERVAL -",
                        number.span,
                    ));
                }
                (
                    format!("-{}", &self.text[number.span.clone()]),
                    token.span.start..number.span.end,
                )
            }
            _ => (
                self.text[token.span.clone()].to_string(),
                token.span.clone(),
            ),
        };
        let amount: i64 = text.parse().map_err(|_| {
            ExprError::new(
                format!("invalid interval value '{text}'"),
                value_span.clone(),
            )
            .with_help("write a whole number, e.g. INTERVAL '4' SECOND")
        })?;
        let unit = self.advance();
        let factor = match &unit.tok {
            Tok::Ident(w) => {
                let upper = w.to_ascii_uppercase();
                let singular = upper.strip_suffix('S').unwrap_or(&upper);
                match singular {
                    "MILLISECOND" => Some(1),
                    "SECOND" => Some(1000),
                    "MINUTE" => Some(60_000),
                    "HOUR" => Some(3_600_000),
                    "DAY" => Some(86_400_000),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(factor) = factor else {
            return Err(ExprError::new(
                format!(
                    "expected a time unit after INTERVAL '{text}', found {}",
                    self.describe(&unit)
                ),
                unit.span,
            )
            .with_help("use MILLISECOND, SECOND, MINUTE, HOUR or DAY"));
        };
        let ms = amount
            .checked_mul(factor)
            .ok_or_else(|| ExprError::new("interval is out of range", start..unit.span.end))?;
        Ok(Ast::new(AstKind::Interval(ms), start..unit.span.end))
    }

    fn parse_timestamp_literal(&mut self) -> Result<Ast, ExprError> {
        let start = self.advance().span.start;
        let token = self.advance();
        let Tok::Str(text) = &token.tok else {
            return Err(ExprError::new(
                "expected a string after TIMESTAMP",
                token.span,
            ));
        };
        let ts = parse_timestamp(text.trim()).ok_or_else(|| {
            ExprError::new(
                format!("invalid TIMESTAMP literal '{text}'"),
                token.span.clone(),
            )
            .with_help("write it as 'YYYY-MM-DD HH:MM:SS[.fff]'")
        })?;
        Ok(Ast::new(
            AstKind::Literal(Value::Timestamp(ts)),
            start..token.span.end,
        ))
    }

    fn parse_cast(&mut self) -> Result<Ast, ExprError> {
        let start = self.advance().span.start;
        self.advance(); // `(`
        let expr = self.parse_expr()?;
        self.expect_kw("AS", "in CAST(expr AS type)")?;
        let (to, length) = self.parse_type()?;
        let end = self.expect(Tok::RParen, "`)` to close CAST")?.end;
        Ok(Ast::new(
            AstKind::Cast {
                expr: Box::new(expr),
                to,
                length,
            },
            start..end,
        ))
    }

    /// An optional `(n)` or `(p, s)` after a type name.
    fn type_params(&mut self) -> Result<Vec<(u32, Range<usize>)>, ExprError> {
        let mut params = Vec::new();
        if !self.eat(&Tok::LParen) {
            return Ok(params);
        }
        loop {
            let token = self.advance();
            let value = match token.tok {
                Tok::Integer => self.text[token.span.clone()].parse::<u32>().ok(),
                _ => None,
            };
            match value {
                Some(v) => params.push((v, token.span)),
                None => return Err(ExprError::new("expected a number", token.span)),
            }
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RParen, "`)` after the type parameters")?;
        Ok(params)
    }

    fn parse_type(&mut self) -> Result<(DataType, Option<StringLength>), ExprError> {
        let token = self.advance();
        let Tok::Ident(word) = &token.tok else {
            return Err(ExprError::new(
                format!("expected a type name, found {}", self.describe(&token)),
                token.span,
            ));
        };
        let upper = word.to_ascii_uppercase();
        let params = self.type_params()?;
        let no_params = |ty: DataType, params: &[(u32, Range<usize>)]| match params.first() {
            None => Ok(ty),
            Some((_, span)) => Err(ExprError::new(
                format!("type {upper} takes no parameters"),
                span.clone(),
            )),
        };
        let too_many = |params: &[(u32, Range<usize>)], max: usize| {
            params.get(max).map(|(_, span)| {
                ExprError::new(format!("too many parameters for {upper}"), span.clone())
            })
        };
        match upper.as_str() {
            "BIGINT" | "INT" | "INTEGER" | "SMALLINT" | "TINYINT" => {
                Ok((no_params(DataType::BigInt, &params)?, None))
            }
            "DOUBLE" | "FLOAT" | "REAL" => {
                if upper == "DOUBLE" {
                    self.eat_kw("PRECISION");
                }
                Ok((no_params(DataType::Double, &params)?, None))
            }
            "BOOLEAN" | "BOOL" => Ok((no_params(DataType::Boolean, &params)?, None)),
            "STRING" => Ok((no_params(DataType::String, &params)?, None)),
            "VARCHAR" | "CHAR" | "CHARACTER" => {
                if let Some(e) = too_many(&params, 1) {
                    return Err(e);
                }
                let n = match params.first() {
                    Some((0, span)) => {
                        return Err(ExprError::new("a string length must be at least 1", span.clone()))
                    }
                    // CHAR(n) pads every value to n characters, so n must stay reasonable.
                    Some((n, span)) if upper != "VARCHAR" && *n > MAX_CHAR_LENGTH => {
                        return Err(ExprError::new(
                            format!("CHAR length must be at most {MAX_CHAR_LENGTH}, found {n}"),
                            span.clone(),
                        )
                        .with_help("use VARCHAR(n), which does not pad"))
                    }
                    Some((n, _)) => Some(*n),
                    None if upper == "VARCHAR" => None,
                    None => Some(1),
                };
                let length = n.map(|n| {
                    if upper == "VARCHAR" {
                        StringLength::Varchar(n)
                    } else {
                        StringLength::Char(n)
                    }
                });
                Ok((DataType::String, length))
            }
            "DECIMAL" | "DEC" | "NUMERIC" => {
                if let Some(e) = too_many(&params, 2) {
                    return Err(e);
                }
                let (precision, pspan) = params
                    .first()
                    .cloned()
                    .unwrap_or((10, token.span.clone()));
                let (scale, sspan) = params.get(1).cloned().unwrap_or((0, pspan.clone()));
                if !(1..=38).contains(&precision) {
                    return Err(ExprError::new(
                        format!("DECIMAL precision must be between 1 and 38, found {precision}"),
                        pspan,
                    ));
                }
                if scale > precision {
                    return Err(ExprError::new(
                        format!("DECIMAL scale {scale} exceeds the precision {precision}"),
                        sspan,
                    ));
                }
                if scale > 18 {
                    return Err(ExprError::new(
                        format!("DECIMAL scale {scale} is not supported (at most 18)"),
                        sspan,
                    ));
                }
                Ok((
                    DataType::Decimal {
                        precision: precision as u8,
                        scale: scale as u8,
                    },
                    None,
                ))
            }
            "TIMESTAMP" => {
                if let Some(e) = too_many(&params, 1) {
                    return Err(e);
                }
                if let Some((p, span)) = params.first() {
                    if *p > 9 {
                        return Err(ExprError::new(
                            format!("TIMESTAMP precision must be between 0 and 9, found {p}"),
                            span.clone(),
                        ));
                    }
                }
                if self.is_kw("WITHOUT") {
                    self.advance();
                    self.expect_kw("TIME", "in WITHOUT TIME ZONE")?;
                    self.expect_kw("ZONE", "in WITHOUT TIME ZONE")?;
                }
                Ok((DataType::Timestamp, None))
            }
            _ => Err(ExprError::new(format!("unknown type `{word}`"), token.span).with_help(
                "use BIGINT, INT, DOUBLE, DECIMAL(p, s), STRING, VARCHAR(n), CHAR(n), BOOLEAN or TIMESTAMP(3)",
            )),
        }
    }

    /// `EXTRACT(unit FROM ts)`, rewritten to the equivalent function call (`HOUR(ts)`, ...).
    fn parse_extract(&mut self) -> Result<Ast, ExprError> {
        let start = self.advance().span.start;
        self.advance(); // `(`
        let unit = self.advance();
        let function = match &unit.tok {
            Tok::Ident(w) => match w.to_ascii_uppercase().as_str() {
                "YEAR" => Some("year"),
                "MONTH" => Some("month"),
                "DAY" => Some("dayofmonth"),
                "HOUR" => Some("hour"),
                "MINUTE" => Some("minute"),
                "SECOND" => Some("second"),
                "DOW" => Some("dayofweek"),
                "DOY" => Some("dayofyear"),
                _ => None,
            },
            _ => None,
        };
        let Some(function) = function else {
            return Err(ExprError::new(
                format!("cannot EXTRACT {}", self.describe(&unit)),
                unit.span,
            )
            .with_help("use YEAR, MONTH, DAY, HOUR, MINUTE, SECOND, DOW or DOY"));
        };
        self.expect_kw("FROM", "in EXTRACT(unit FROM expr)")?;
        let arg = self.parse_expr()?;
        let end = self.expect(Tok::RParen, "`)` to close EXTRACT")?.end;
        Ok(Ast::new(
            AstKind::Call {
                name: function.to_string(),
                args: vec![arg],
                distinct: false,
                star: false,
                filter: None,
            },
            start..end,
        ))
    }
}

/// An operator that continues an expression after its left operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Infix {
    Binary(BinaryOp),
    IsNull,
    /// The flag is `NOT BETWEEN` / `NOT IN` / `NOT LIKE`.
    Between(bool),
    In(bool),
    Like(bool),
}

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_COMPARISON: u8 = 4;
const PREC_UNARY: u8 = 8;

fn binary_precedence(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => PREC_OR,
        BinaryOp::And => PREC_AND,
        BinaryOp::Eq
        | BinaryOp::NotEq
        | BinaryOp::Lt
        | BinaryOp::LtEq
        | BinaryOp::Gt
        | BinaryOp::GtEq => PREC_COMPARISON,
        BinaryOp::Concat => 5,
        BinaryOp::Add | BinaryOp::Sub => 6,
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 7,
    }
}

fn out_of_range(span: Range<usize>) -> ExprError {
    ExprError::new("integer literal is out of range for BIGINT", span)
        .with_help("BIGINT holds -9223372036854775808 to 9223372036854775807")
}

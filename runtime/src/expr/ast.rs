//! The syntax tree of an expression, as written, before names are resolved.
//!
//! The tree is public because the job compiler inspects it before binding (to find aggregate
//! calls, split WHERE clauses into conjuncts, recognise window functions) and may build small
//! trees of its own.

use crate::types::{timestamp_to_string, DataType, Value};
use std::fmt;
use std::ops::Range;

/// An expression node with the byte range of the text it came from, so that type errors found
/// later can still point at the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Ast {
    /// What the node is.
    pub kind: AstKind,
    /// Byte offsets of the node's text, for error messages.
    pub span: Range<usize>,
}

/// The shape of one expression node.
#[derive(Clone, Debug, PartialEq)]
pub enum AstKind {
    /// A column name, optionally qualified by an input name (`A.price`).
    Column {
        /// The input name before the dot, for joins.
        qualifier: Option<String>,
        /// The column name as written (case is resolved against the schema later).
        name: String,
    },
    /// A literal: BIGINT, DECIMAL, DOUBLE, STRING, BOOLEAN, TIMESTAMP or NULL.
    Literal(Value),
    /// A day-time interval literal, in milliseconds (`INTERVAL '4' SECOND`).
    Interval(i64),
    /// `NOT expr` or `-expr`.
    Unary {
        /// Which prefix operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<Ast>,
    },
    /// `left op right`.
    Binary {
        /// Which infix operator.
        op: BinaryOp,
        /// The left operand.
        left: Box<Ast>,
        /// The right operand.
        right: Box<Ast>,
    },
    /// `expr [NOT] BETWEEN low AND high`.
    Between {
        /// The tested value.
        expr: Box<Ast>,
        /// The inclusive lower bound.
        low: Box<Ast>,
        /// The inclusive upper bound.
        high: Box<Ast>,
        /// True for NOT BETWEEN.
        negated: bool,
    },
    /// `expr [NOT] IN (a, b, ...)`.
    InList {
        /// The tested value.
        expr: Box<Ast>,
        /// The candidates (at least one).
        list: Vec<Ast>,
        /// True for NOT IN.
        negated: bool,
    },
    /// `expr IS [NOT] NULL`.
    IsNull {
        /// The tested value.
        expr: Box<Ast>,
        /// True for IS NOT NULL.
        negated: bool,
    },
    /// `expr [NOT] LIKE pattern [ESCAPE 'c']`.
    Like {
        /// The tested string.
        expr: Box<Ast>,
        /// The pattern, with `%` and `_` wildcards.
        pattern: Box<Ast>,
        /// The character that makes the next `%`, `_` or itself literal.
        escape: Option<char>,
        /// True for NOT LIKE.
        negated: bool,
    },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        /// The value compared with each WHEN in a simple CASE; None for a searched CASE.
        operand: Option<Box<Ast>>,
        /// (WHEN, THEN) pairs, tried in order.
        branches: Vec<(Ast, Ast)>,
        /// The result when no branch matches; None means NULL.
        else_: Option<Box<Ast>>,
    },
    /// `CAST(expr AS type)`.
    Cast {
        /// The converted value.
        expr: Box<Ast>,
        /// The target type.
        to: DataType,
        /// The `n` of VARCHAR(n) / CHAR(n), which [`DataType`] does not carry but which changes
        /// the value (truncation, padding).
        length: Option<StringLength>,
    },
    /// A function call, scalar or aggregate.
    Call {
        /// The function name, lower-cased (names are case-insensitive).
        name: String,
        /// The arguments, empty for `count(*)`.
        args: Vec<Ast>,
        /// `DISTINCT` inside the parentheses; only aggregates accept it.
        distinct: bool,
        /// `count(*)`.
        star: bool,
        /// `FILTER (WHERE cond)` after the call; only aggregates accept it.
        filter: Option<Box<Ast>>,
    },
}

/// The declared length of a string cast target, because CAST truncates to it (and CHAR pads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StringLength {
    /// VARCHAR(n): at most n characters.
    Varchar(u32),
    /// CHAR(n): exactly n characters, padded with spaces.
    Char(u32),
}

/// Prefix operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// Logical NOT (three-valued: NOT NULL is NULL).
    Not,
    /// Arithmetic negation.
    Neg,
}

/// Infix operators, from the loosest binding to the tightest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// Three-valued OR.
    Or,
    /// Three-valued AND.
    And,
    /// `=`.
    Eq,
    /// `<>` (also written `!=`).
    NotEq,
    /// `<`.
    Lt,
    /// `<=`.
    LtEq,
    /// `>`.
    Gt,
    /// `>=`.
    GtEq,
    /// `||`, string concatenation.
    Concat,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/` (integer division for BIGINT operands).
    Div,
    /// `%`, the remainder.
    Mod,
}

impl BinaryOp {
    /// The operator as written, for error messages and printing.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Concat => "||",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }

    /// True for `=`, `<>`, `<`, `<=`, `>`, `>=`, so callers can spot join and filter keys.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }
}

/// Names of the aggregate functions, which only `compile_aggregate` accepts.
pub(crate) const AGGREGATE_NAMES: [&str; 5] = ["count", "sum", "min", "max", "avg"];

impl Ast {
    /// Builds a node; a convenience for code that synthesises expressions.
    pub fn new(kind: AstKind, span: Range<usize>) -> Ast {
        Ast { kind, span }
    }

    /// The operands of top-level ANDs, so that a WHERE clause can be split into join keys,
    /// pushed-down filters and the rest. A non-AND expression is its own single conjunct.
    pub fn conjuncts(&self) -> Vec<&Ast> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            match &node.kind {
                AstKind::Binary {
                    op: BinaryOp::And,
                    left,
                    right,
                } => {
                    stack.push(right);
                    stack.push(left);
                }
                _ => out.push(node),
            }
        }
        out
    }

    /// `(qualifier, name)` when this is a bare column reference, for callers that treat plain
    /// columns specially (GROUP BY keys, join keys, pass-through projections).
    pub fn as_column(&self) -> Option<(Option<&str>, &str)> {
        match &self.kind {
            AstKind::Column { qualifier, name } => Some((qualifier.as_deref(), name)),
            _ => None,
        }
    }

    /// The direct sub-expressions, in source order, so that callers can walk the tree without
    /// matching every variant.
    pub fn children(&self) -> Vec<&Ast> {
        match &self.kind {
            AstKind::Column { .. } | AstKind::Literal(_) | AstKind::Interval(_) => Vec::new(),
            AstKind::Unary { expr, .. }
            | AstKind::IsNull { expr, .. }
            | AstKind::Cast { expr, .. } => vec![expr],
            AstKind::Binary { left, right, .. } => vec![left, right],
            AstKind::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            AstKind::InList { expr, list, .. } => {
                let mut v: Vec<&Ast> = vec![expr];
                v.extend(list.iter());
                v
            }
            AstKind::Like { expr, pattern, .. } => vec![expr, pattern],
            AstKind::Case {
                operand,
                branches,
                else_,
            } => {
                let mut v: Vec<&Ast> = operand.iter().map(|b| &**b).collect();
                for (when, then) in branches {
                    v.push(when);
                    v.push(then);
                }
                v.extend(else_.iter().map(|b| &**b));
                v
            }
            AstKind::Call { args, filter, .. } => {
                let mut v: Vec<&Ast> = args.iter().collect();
                v.extend(filter.iter().map(|b| &**b));
                v
            }
        }
    }

    /// True when this node itself is a call of COUNT, SUM, MIN, MAX or AVG.
    pub fn is_aggregate_call(&self) -> bool {
        matches!(&self.kind, AstKind::Call { name, .. } if AGGREGATE_NAMES.contains(&name.as_str()))
    }

    /// True when an aggregate call occurs anywhere in the tree, so the job compiler can tell an
    /// aggregating SELECT from a plain projection.
    pub fn contains_aggregate(&self) -> bool {
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            if node.is_aggregate_call() {
                return true;
            }
            stack.extend(node.children());
        }
        false
    }

    /// The nesting depth of the tree, computed without recursion so that absurdly deep trees
    /// can be rejected before anything recurses over them.
    pub(crate) fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((node, d)) = stack.pop() {
            max = max.max(d);
            for child in node.children() {
                stack.push((child, d + 1));
            }
        }
        max
    }
}

/// Prints the expression back as SQL that parses to the same tree (spans aside), so that error
/// messages, plans and generated names can show expressions.
impl fmt::Display for Ast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AstKind::Column { qualifier, name } => {
                if let Some(q) = qualifier {
                    write_ident(f, q)?;
                    f.write_str(".")?;
                }
                write_ident(f, name)
            }
            AstKind::Literal(v) => write_literal(f, v),
            AstKind::Interval(ms) => write_interval(f, *ms),
            AstKind::Unary { op, expr } => match op {
                UnaryOp::Not => write!(f, "NOT {}", Operand(expr)),
                UnaryOp::Neg => write!(f, "-{}", Operand(expr)),
            },
            AstKind::Binary { op, left, right } => {
                write!(f, "{} {} {}", Operand(left), op.symbol(), Operand(right))
            }
            AstKind::Between {
                expr,
                low,
                high,
                negated,
            } => write!(
                f,
                "{} {}BETWEEN {} AND {}",
                Operand(expr),
                not(*negated),
                Operand(low),
                Operand(high)
            ),
            AstKind::InList {
                expr,
                list,
                negated,
            } => {
                write!(f, "{} {}IN (", Operand(expr), not(*negated))?;
                write_list(f, list)?;
                f.write_str(")")
            }
            AstKind::IsNull { expr, negated } => {
                write!(f, "{} IS {}NULL", Operand(expr), not(*negated))
            }
            AstKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                write!(
                    f,
                    "{} {}LIKE {}",
                    Operand(expr),
                    not(*negated),
                    Operand(pattern)
                )?;
                if let Some(c) = escape {
                    write!(f, " ESCAPE ")?;
                    write_literal(f, &Value::str(&c.to_string()))?;
                }
                Ok(())
            }
            AstKind::Case {
                operand,
                branches,
                else_,
            } => {
                f.write_str("CASE")?;
                if let Some(op) = operand {
                    write!(f, " {op}")?;
                }
                for (when, then) in branches {
                    write!(f, " WHEN {when} THEN {then}")?;
                }
                if let Some(e) = else_ {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            AstKind::Cast { expr, to, length } => {
                write!(f, "CAST({expr} AS ")?;
                match (to, length) {
                    (_, Some(StringLength::Varchar(n))) => write!(f, "VARCHAR({n})")?,
                    (_, Some(StringLength::Char(n))) => write!(f, "CHAR({n})")?,
                    (DataType::Timestamp, None) => f.write_str("TIMESTAMP(3)")?,
                    (DataType::Decimal { precision, scale }, None) => {
                        write!(f, "DECIMAL({precision}, {scale})")?
                    }
                    (other, None) => write!(f, "{other}")?,
                }
                f.write_str(")")
            }
            AstKind::Call {
                name,
                args,
                distinct,
                star,
                filter,
            } => {
                write!(f, "{}(", name.to_ascii_uppercase())?;
                if *star {
                    f.write_str("*")?;
                } else {
                    if *distinct {
                        f.write_str("DISTINCT ")?;
                    }
                    write_list(f, args)?;
                }
                f.write_str(")")?;
                if let Some(cond) = filter {
                    write!(f, " FILTER (WHERE {cond})")?;
                }
                Ok(())
            }
        }
    }
}

/// Prints a sub-expression, parenthesised when it is itself an operator expression, so that
/// printing never depends on precedence.
struct Operand<'a>(&'a Ast);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let compound = matches!(
            self.0.kind,
            AstKind::Binary { .. }
                | AstKind::Unary { .. }
                | AstKind::Between { .. }
                | AstKind::InList { .. }
                | AstKind::IsNull { .. }
                | AstKind::Like { .. }
        ) || matches!(&self.0.kind, AstKind::Literal(v) if literal_is_negative(v));
        if compound {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn literal_is_negative(v: &Value) -> bool {
    match v {
        Value::Int(i) => *i < 0,
        Value::Float(x) => x.is_sign_negative(),
        Value::Decimal(d) => d.unscaled < 0,
        _ => false,
    }
}

fn not(negated: bool) -> &'static str {
    if negated {
        "NOT "
    } else {
        ""
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Ast]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Words that cannot be bare column names because the parser gives them a meaning.
pub(crate) const RESERVED: [&str; 17] = [
    "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "BETWEEN", "IN", "LIKE", "CASE", "WHEN",
    "THEN", "ELSE", "END", "AS", "DISTINCT",
];

pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn write_ident(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !is_reserved(name);
    if plain {
        f.write_str(name)
    } else {
        write!(f, "`{}`", name.replace('`', "``"))
    }
}

fn write_literal(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::Null => f.write_str("NULL"),
        Value::Bool(true) => f.write_str("TRUE"),
        Value::Bool(false) => f.write_str("FALSE"),
        Value::Int(i) => write!(f, "{i}"),
        // Exponent notation keeps the literal a DOUBLE when parsed back.
        Value::Float(x) if x.is_finite() => write!(f, "{x:e}"),
        Value::Float(x) => write!(f, "CAST('{x}' AS DOUBLE)"),
        Value::Decimal(d) => write!(f, "{d}"),
        Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        Value::Timestamp(ts) => write!(f, "TIMESTAMP '{}'", timestamp_to_string(*ts)),
        Value::Interval(ms) => write_interval(f, *ms),
    }
}

fn write_interval(f: &mut fmt::Formatter<'_>, ms: i64) -> fmt::Result {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "DAY"),
        (3_600_000, "HOUR"),
        (60_000, "MINUTE"),
        (1000, "SECOND"),
    ];
    for (factor, unit) in UNITS {
        if ms != 0 && ms % factor == 0 {
            return write!(f, "INTERVAL '{}' {unit}", ms / factor);
        }
    }
    write!(f, "INTERVAL '{ms}' MILLISECOND")
}

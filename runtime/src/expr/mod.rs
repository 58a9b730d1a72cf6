//! The SQL-like expression language used in job definitions (projections, filters, join
//! conditions, aggregate arguments), with Flink SQL's syntax and typing rules.
//!
//! Text goes through three stages so that every problem surfaces before a job runs:
//! [`parse_expr`] builds an [`Ast`] (public, so the job compiler can inspect it), [`compile`]
//! resolves names against a [`Scope`] and type-checks it into an [`Expr`], and
//! [`Expr::eval`] runs per record on the hot path without name lookups, re-parsing or panics.
//! Aggregate calls go through [`compile_aggregate`] instead, because their state lives in the
//! aggregation operator, not in the expression.

#![warn(missing_docs)]

mod ast;
mod compile;
mod eval;
mod functions;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

pub use ast::{Ast, AstKind, BinaryOp, StringLength, UnaryOp};
pub use compile::Scope;

use crate::types::{DataType, Value};
use compile::{aggregate_type, check_depth, Binder};
use eval::Node;
use parser::Parser;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A regular expression from a job or from data (`REGEXP_*` patterns, JSON Schema `pattern`),
/// with bounds on nesting and compiled size: a pattern such as `a++++…` nested a few hundred
/// levels deep overflowed the stack of the thread compiling it (found by fuzzing), and
/// patterns may come from records.
pub fn bounded_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .nest_limit(32)
        .size_limit(1 << 20)
        .build()
}

/// A parse or type error: message, byte span in the expression text, optional hint on how to
/// fix. Errors are values (never panics) so a bad job definition is reported, not crashed on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong, naming the offending column, function, type or token.
    pub message: String,
    /// Byte offsets in the expression text of the part that is wrong.
    pub span: Range<usize>,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
}

impl ExprError {
    /// An error without a hint; other modules use it to report problems in the same shape.
    pub fn new(message: impl Into<String>, span: Range<usize>) -> ExprError {
        ExprError {
            message: message.into(),
            span,
            help: None,
        }
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_help(mut self, help: impl Into<String>) -> ExprError {
        self.help = Some(help.into());
        self
    }

    /// The error with the offending text underlined, for showing to people:
    ///
    /// ```text
    /// error: unknown column `prce`; available columns: price
    ///   | prce * 2
    ///   | ^^^^
    ///   = help: did you mean `price`?
    /// ```
    pub fn render(&self, source: &str) -> String {
        let mut out = format!("error: {}\n", self.message);
        let start = self.span.start.min(source.len());
        let end = self.span.end.clamp(start, source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |p| p + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |p| start + p);
        if source.is_char_boundary(start) && source.is_char_boundary(end) {
            let line = &source[line_start..line_end];
            let pad = source[line_start..start].chars().count();
            let width = source[start..end.min(line_end)].chars().count().max(1);
            out.push_str(&format!(
                "  | {line}\n  | {}{}\n",
                " ".repeat(pad),
                "^".repeat(width)
            ));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        out
    }
}

/// Parses an expression.
pub fn parse_expr(text: &str) -> Result<Ast, ExprError> {
    let mut parser = Parser::new(text)?;
    let ast = parser.parse_expr()?;
    parser.expect_end()?;
    check_depth(&ast)?;
    Ok(ast)
}

/// Parses a select item, `expr [AS name]` (or `expr name`), into the expression and its alias.
/// The alias may be a backquoted identifier.
pub fn parse_select_item(text: &str) -> Result<(Ast, Option<String>), ExprError> {
    let mut parser = Parser::new(text)?;
    let ast = parser.parse_expr()?;
    let alias = parser.parse_alias()?;
    parser.expect_end()?;
    check_depth(&ast)?;
    Ok((ast, alias))
}

/// The name an unaliased select item gets: the column name for a bare column reference, else
/// None (the caller picks a generated name).
pub fn default_name(ast: &Ast) -> Option<String> {
    ast.as_column().map(|(_, name)| name.to_string())
}

/// A compiled, type-checked scalar expression, evaluated per row.
#[derive(Clone, Debug)]
pub struct Expr {
    node: Node,
    data_type: DataType,
}

impl Expr {
    /// The static type of every value `eval` returns (or NULL).
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// Evaluates the expression on a row laid out as the scope it was compiled in. Never
    /// panics: runtime errors (division by zero, overflow, a failed cast) give `Value::Null`.
    #[inline]
    pub fn eval(&self, row: &[Value]) -> Value {
        self.node.eval(row)
    }

    /// Evaluates a condition as WHERE does: NULL counts as false.
    #[inline]
    pub fn eval_predicate(&self, row: &[Value]) -> bool {
        self.node.eval_bool(row) == Some(true)
    }

    /// `Some(i)` when the expression is a bare column reference, so projections can move values
    /// instead of evaluating.
    pub fn as_column(&self) -> Option<usize> {
        match self.node {
            Node::Column(i) => Some(i),
            _ => None,
        }
    }

    /// The value when the expression is constant (literals and folded constant expressions),
    /// so callers can read window sizes, offsets and the like at compile time.
    pub fn as_literal(&self) -> Option<&Value> {
        match &self.node {
            Node::Literal(v) => Some(v),
            _ => None,
        }
    }
}

/// Compiles a scalar expression against a scope: resolves names, checks types, precompiles
/// patterns. Aggregate calls are rejected here with a clear error; use [`compile_aggregate`].
pub fn compile(ast: &Ast, scope: &Scope) -> Result<Expr, ExprError> {
    check_depth(ast)?;
    let typed = Binder {
        scope,
        in_aggregate: false,
    }
    .bind(ast)?;
    Ok(Expr {
        node: typed.node,
        data_type: typed.ty,
    })
}

/// The aggregate functions the aggregation operators implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateFunction {
    /// COUNT(*) counts rows; COUNT(x) counts non-NULL values.
    Count,
    /// SUM of non-NULL values; NULL when there are none.
    Sum,
    /// The smallest non-NULL value.
    Min,
    /// The largest non-NULL value.
    Max,
    /// The mean of non-NULL values (truncated for BIGINT, as Flink does).
    Avg,
}

/// A compiled aggregate call: COUNT(*) has arg None. The operator evaluates `filter` and `arg`
/// per row and keeps the accumulator itself.
#[derive(Clone, Debug)]
pub struct AggregateCall {
    /// Which aggregate.
    pub function: AggregateFunction,
    /// The aggregated expression; None for COUNT(*).
    pub arg: Option<Expr>,
    /// `DISTINCT`: each distinct argument value counts once.
    pub distinct: bool,
    /// `FILTER (WHERE cond)`: only rows where the condition is TRUE are aggregated.
    pub filter: Option<Expr>,
    /// The type of the aggregate's result (Flink's rules, e.g. SUM(DECIMAL(p, s)) is
    /// DECIMAL(38, s)).
    pub result_type: DataType,
}

/// Compiles an aggregate call such as `count(*)`, `count(distinct bidder) filter (where price <
/// 10000)`, `max(price)`, `avg(price)`. Errors if the top level is not an aggregate call or if
/// aggregates nest.
pub fn compile_aggregate(ast: &Ast, scope: &Scope) -> Result<AggregateCall, ExprError> {
    check_depth(ast)?;
    let AstKind::Call {
        name,
        args,
        distinct,
        star,
        filter,
    } = &ast.kind
    else {
        return Err(ExprError::new(
            format!("expected an aggregate call such as COUNT(*) or SUM(x), found `{ast}`"),
            ast.span.clone(),
        ));
    };
    let upper = name.to_ascii_uppercase();
    let function = match name.as_str() {
        "count" => AggregateFunction::Count,
        "sum" => AggregateFunction::Sum,
        "min" => AggregateFunction::Min,
        "max" => AggregateFunction::Max,
        "avg" => AggregateFunction::Avg,
        _ => {
            return Err(ExprError::new(
                format!("{upper} is not an aggregate function"),
                ast.span.clone(),
            )
            .with_help("the aggregate functions are COUNT, SUM, MIN, MAX and AVG"))
        }
    };
    let binder = Binder {
        scope,
        in_aggregate: true,
    };
    let arg = if *star {
        if function != AggregateFunction::Count {
            return Err(ExprError::new(
                format!("{upper}(*) is not allowed: only COUNT accepts `*`"),
                ast.span.clone(),
            ));
        }
        None
    } else {
        if args.len() != 1 {
            return Err(ExprError::new(
                format!(
                    "aggregate function {upper} expects 1 argument, found {}",
                    args.len()
                ),
                ast.span.clone(),
            ));
        }
        let typed = binder.bind(&args[0])?;
        Some(Expr {
            node: typed.node,
            data_type: typed.ty,
        })
    };
    let result_type = aggregate_type(function, arg.as_ref().map(Expr::data_type)).map_err(|m| {
        ExprError::new(m, args.first().map_or(ast.span.clone(), |a| a.span.clone()))
    })?;
    let filter = match filter {
        Some(f) => {
            let typed = binder.bind(f)?;
            if !matches!(typed.ty, DataType::Boolean | DataType::Null) {
                return Err(ExprError::new(
                    format!("the FILTER condition must be BOOLEAN, found {}", typed.ty),
                    f.span.clone(),
                ));
            }
            Some(Expr {
                node: typed.node,
                data_type: typed.ty,
            })
        }
        None => None,
    };
    Ok(AggregateCall {
        function,
        arg,
        distinct: *distinct,
        filter,
        result_type,
    })
}

/// The closest candidate to a misspelt name (case-insensitive edit distance), for "did you
/// mean" hints; None when nothing is close enough to be a plausible typo.
pub(crate) fn suggest<'n>(
    name: &str,
    candidates: impl Iterator<Item = &'n str>,
) -> Option<&'n str> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

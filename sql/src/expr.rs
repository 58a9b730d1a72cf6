//! From sqlparser expressions to Eddy's expression tree ([`Ast`]), which the planner inspects
//! (conjuncts, aggregate calls, plain columns) and prints into the job it emits.
//!
//! Leaves (literals, intervals, cast target types) are printed by sqlparser and read back by
//! Eddy's own expression parser, so a literal means in SQL exactly what it means in a job file
//! (`0.908` is a DECIMAL(3, 3) in both). Names are resolved by the caller's scope.

use crate::error::{Pos, SqlError};
use eddy_runtime::expr::{parse_expr, Ast, AstKind, BinaryOp, UnaryOp};
use sqlparser::ast::{
    self as sql, BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, Spanned, UnaryOperator,
};

/// How a scope turns a (possibly qualified) name into a column reference; also told where the
/// name is, for its errors.
pub type Resolve<'a> = dyn Fn(&[Ident], Pos) -> Result<Ast, SqlError> + 'a;

/// Converts expressions of one statement.
pub struct Converter<'a> {
    /// The file the statement is in, and where it starts (for nodes without a span).
    pub file: usize,
    pub fallback: Pos,
    pub resolve: &'a Resolve<'a>,
    /// User-defined functions the script declared, mapped to the built-in that implements
    /// them (lower-case names).
    pub functions: &'a dyn Fn(&str) -> Option<String>,
    pub error: &'a dyn Fn(Pos, String) -> SqlError,
}

fn node(kind: AstKind) -> Ast {
    Ast::new(kind, 0..0)
}

fn boxed(kind: AstKind) -> Box<Ast> {
    Box::new(node(kind))
}

impl Converter<'_> {
    pub fn pos(&self, e: &impl Spanned) -> Pos {
        Pos::of(self.file, e.span(), self.fallback)
    }

    fn fail<T>(&self, at: &impl Spanned, message: impl Into<String>) -> Result<T, SqlError> {
        Err((self.error)(self.pos(at), message.into()))
    }

    fn unsupported<T>(&self, e: &Expr, what: &str) -> Result<T, SqlError> {
        self.fail(
            e,
            format!("{what} is not supported in an expression (`{e}`)"),
        )
    }

    /// Reads a leaf with Eddy's expression parser.
    fn leaf(&self, e: &Expr) -> Result<Ast, SqlError> {
        parse_expr(&e.to_string()).or_else(|err| self.fail(e, format!("`{e}`: {}", err.message)))
    }

    pub fn convert(&self, e: &Expr) -> Result<Ast, SqlError> {
        Ok(match e {
            Expr::Identifier(ident) => (self.resolve)(std::slice::from_ref(ident), self.pos(e))?,
            Expr::CompoundIdentifier(parts) => (self.resolve)(parts, self.pos(e))?,
            Expr::Nested(inner) => self.convert(inner)?,
            Expr::Value(_) | Expr::Interval(_) | Expr::TypedString(_) => self.leaf(e)?,
            Expr::IsNull(x) | Expr::IsNotNull(x) => node(AstKind::IsNull {
                expr: Box::new(self.convert(x)?),
                negated: matches!(e, Expr::IsNotNull(_)),
            }),
            // `x IS TRUE` is FALSE, not NULL, when x is NULL: `COALESCE(x = TRUE, FALSE)`, which
            // evaluates x once.
            Expr::IsTrue(x) | Expr::IsFalse(x) => {
                let literal =
                    |b: bool| boxed(AstKind::Literal(eddy_runtime::types::Value::Bool(b)));
                let compared = node(AstKind::Binary {
                    op: BinaryOp::Eq,
                    left: Box::new(self.convert(x)?),
                    right: literal(matches!(e, Expr::IsTrue(_))),
                });
                node(AstKind::Call {
                    name: "coalesce".into(),
                    args: vec![compared, *literal(false)],
                    distinct: false,
                    star: false,
                    filter: None,
                })
            }
            Expr::UnaryOp { op, expr } => {
                let op = match op {
                    UnaryOperator::Not => UnaryOp::Not,
                    UnaryOperator::Minus => {
                        if matches!(**expr, Expr::Value(_)) {
                            return self.leaf(e);
                        }
                        UnaryOp::Neg
                    }
                    UnaryOperator::Plus => return self.convert(expr),
                    _ => return self.unsupported(e, &format!("the operator `{op}`")),
                };
                node(AstKind::Unary {
                    op,
                    expr: Box::new(self.convert(expr)?),
                })
            }
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Or => BinaryOp::Or,
                    BinaryOperator::And => BinaryOp::And,
                    BinaryOperator::Eq => BinaryOp::Eq,
                    BinaryOperator::NotEq => BinaryOp::NotEq,
                    BinaryOperator::Lt => BinaryOp::Lt,
                    BinaryOperator::LtEq => BinaryOp::LtEq,
                    BinaryOperator::Gt => BinaryOp::Gt,
                    BinaryOperator::GtEq => BinaryOp::GtEq,
                    BinaryOperator::StringConcat => BinaryOp::Concat,
                    BinaryOperator::Plus => BinaryOp::Add,
                    BinaryOperator::Minus => BinaryOp::Sub,
                    BinaryOperator::Multiply => BinaryOp::Mul,
                    BinaryOperator::Divide => BinaryOp::Div,
                    BinaryOperator::Modulo => BinaryOp::Mod,
                    other => return self.unsupported(e, &format!("the operator `{other}`")),
                };
                node(AstKind::Binary {
                    op,
                    left: Box::new(self.convert(left)?),
                    right: Box::new(self.convert(right)?),
                })
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => node(AstKind::Between {
                expr: Box::new(self.convert(expr)?),
                low: Box::new(self.convert(low)?),
                high: Box::new(self.convert(high)?),
                negated: *negated,
            }),
            Expr::In {
                expr,
                target: sql::InTarget::List(list),
                negated,
                ..
            } => node(AstKind::InList {
                expr: Box::new(self.convert(expr)?),
                list: list
                    .iter()
                    .map(|x| self.convert(x))
                    .collect::<Result<_, _>>()?,
                negated: *negated,
            }),
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => {
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(Expr::Value(v)) => match &v.value {
                        sql::Value::SingleQuotedString(s) if s.chars().count() == 1 => {
                            s.chars().next()
                        }
                        _ => return self.fail(e, "ESCAPE takes one character, e.g. ESCAPE '!'"),
                    },
                    Some(_) => return self.fail(e, "ESCAPE takes one character, e.g. ESCAPE '!'"),
                };
                node(AstKind::Like {
                    expr: Box::new(self.convert(expr)?),
                    pattern: Box::new(self.convert(pattern)?),
                    escape,
                    negated: *negated,
                })
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => node(AstKind::Case {
                operand: match operand {
                    Some(o) => Some(Box::new(self.convert(o)?)),
                    None => None,
                },
                branches: conditions
                    .iter()
                    .map(|w| Ok((self.convert(&w.condition)?, self.convert(&w.result)?)))
                    .collect::<Result<_, SqlError>>()?,
                else_: match else_result {
                    Some(x) => Some(Box::new(self.convert(x)?)),
                    None => None,
                },
            }),
            Expr::Cast {
                kind: sql::CastKind::Cast,
                expr,
                data_type,
                format: None,
            } => {
                let (to, length) = eddy_type(data_type).or_else(|m| self.fail(e, m))?;
                node(AstKind::Cast {
                    expr: Box::new(self.convert(expr)?),
                    to,
                    length,
                })
            }
            Expr::Function(f) => self.call(e, f)?,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::In { .. } => {
                return self.unsupported(e, "a subquery")
            }
            _ => return self.unsupported(e, "this construct"),
        })
    }

    fn call(&self, e: &Expr, f: &sql::Function) -> Result<Ast, SqlError> {
        if f.over.is_some() {
            return self.fail(
                e,
                "OVER windows are supported only as `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` \
                 filtered by the rank in an outer query (Top-N and deduplication)",
            );
        }
        let name = crate::script::name_of(&f.name).to_ascii_lowercase();
        let name = (self.functions)(&name).unwrap_or(name);
        let mut args = Vec::new();
        let mut star = false;
        let mut distinct = false;
        match &f.args {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(_) => return self.unsupported(e, "a subquery"),
            FunctionArguments::List(list) => {
                distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
                if let Some(clause) = list.clauses.first() {
                    return self.fail(
                        e,
                        format!("`{clause}` inside a function call is not supported"),
                    );
                }
                for arg in &list.args {
                    match arg {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => {
                            args.push(self.convert(x)?)
                        }
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => star = true,
                        _ => return self.fail(e, format!("the argument `{arg}` is not supported")),
                    }
                }
            }
        }
        let filter = match &f.filter {
            Some(cond) => Some(Box::new(self.convert(cond)?)),
            None => None,
        };
        if let Some(clause) = f.within_group.first() {
            return self.fail(e, format!("WITHIN GROUP (`{clause}`) is not supported"));
        }
        Ok(node(AstKind::Call {
            name,
            args,
            distinct,
            star,
            filter,
        }))
    }
}

/// Whether two expressions are the same, ignoring where they are written (GROUP BY keys are
/// matched with SELECT items this way).
pub fn same(a: &Ast, b: &Ast) -> bool {
    a.to_string() == b.to_string()
}

/// The name Flink gives a SELECT item without an alias: a column keeps its name (a field
/// `bid.price` is `price`); anything else is `EXPR$n`.
pub fn default_name(e: &Expr, index: usize) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map(|i| i.value.clone()).unwrap_or_default()
        }
        Expr::Nested(inner) => default_name(inner, index),
        _ => format!("EXPR${index}"),
    }
}

/// The plain expression arguments of a call (none when it has others, such as `*`).
pub fn plain_args(f: &sql::Function) -> Vec<&Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A SQL type as Eddy reads it (the type and, for VARCHAR(n) and CHAR(n), the length): what a
/// CAST to it means in a job file.
pub fn eddy_type(
    ty: &sql::DataType,
) -> Result<
    (
        eddy_runtime::types::DataType,
        Option<eddy_runtime::expr::StringLength>,
    ),
    String,
> {
    match parse_expr(&format!("CAST(NULL AS {ty})")).map(|a| a.kind) {
        Ok(AstKind::Cast { to, length, .. }) => Ok((to, length)),
        _ => Err(format!(
            "the type `{ty}` is not supported; Eddy has BOOLEAN, BIGINT (INT), DOUBLE, \
             DECIMAL(p, s), STRING (VARCHAR) and TIMESTAMP(3)"
        )),
    }
}

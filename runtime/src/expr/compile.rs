//! The binder and type checker: resolves names against a [`Scope`], checks and infers types
//! with Flink's rules, inserts implicit coercions, folds constants, and produces the node tree
//! that [`Expr`](super::Expr) evaluates.

use super::ast::{Ast, AstKind, BinaryOp, StringLength, UnaryOp};
use super::eval::{ArithKind, ArithOp, CastTo, CmpOp, Node};
use super::functions::{check_arity, type_call, LikeMatcher};
use super::parser::MAX_DEPTH;
use super::{suggest, AggregateFunction, ExprError};
use crate::types::{parse_timestamp, DataType, Schema, Value};
use rustc_hash::FxHashSet;
use std::ops::Range;

/// Help text for an aggregate call where only scalar expressions are allowed.
pub(crate) const AGGREGATE_HINT: &str =
    "aggregate functions belong in the SELECT list of a GROUP BY or window query";

/// The names an expression can see: one or more inputs, each optionally qualified (e.g. "A",
/// "B" in a join), columns numbered consecutively across inputs (input 0's columns first), so
/// that a join's concatenated row can be addressed by one index.
pub struct Scope<'a> {
    inputs: Vec<ScopeInput<'a>>,
}

struct ScopeInput<'a> {
    qualifier: Option<&'a str>,
    schema: &'a Schema,
    offset: usize,
}

impl<'a> Scope<'a> {
    /// The common case: one unqualified input.
    pub fn single(schema: &'a Schema) -> Self {
        Scope::new(vec![(None, schema)])
    }

    /// Several inputs whose rows are concatenated in this order (a join's left, then right).
    pub fn new(inputs: Vec<(Option<&'a str>, &'a Schema)>) -> Self {
        let mut offset = 0;
        let inputs = inputs
            .into_iter()
            .map(|(qualifier, schema)| {
                let input = ScopeInput {
                    qualifier,
                    schema,
                    offset,
                };
                offset += schema.len();
                input
            })
            .collect();
        Scope { inputs }
    }

    /// The number of columns across all inputs: the width of the rows expressions will see.
    pub fn width(&self) -> usize {
        self.inputs.iter().map(|i| i.schema.len()).sum()
    }

    /// Resolves a (qualifier, name) to (global index, type). Errors name the column and list
    /// the available ones, with a "did you mean" hint for near misses; an unqualified name found
    /// in two inputs is ambiguous and the error says to qualify it.
    pub fn resolve(
        &self,
        qualifier: Option<&str>,
        name: &str,
        span: Range<usize>,
    ) -> Result<(usize, DataType), ExprError> {
        let shown = |q: Option<&str>| match q {
            Some(q) => format!("{q}.{name}"),
            None => name.to_string(),
        };
        let candidates: Vec<&ScopeInput<'a>> = match qualifier {
            None => self.inputs.iter().collect(),
            Some(q) => {
                let exact: Vec<_> = self
                    .inputs
                    .iter()
                    .filter(|i| i.qualifier == Some(q))
                    .collect();
                let found = if exact.is_empty() {
                    self.inputs
                        .iter()
                        .filter(|i| i.qualifier.is_some_and(|iq| iq.eq_ignore_ascii_case(q)))
                        .collect()
                } else {
                    exact
                };
                if found.len() != 1 {
                    let names: Vec<&str> = self.inputs.iter().filter_map(|i| i.qualifier).collect();
                    let msg = if names.is_empty() {
                        format!(
                            "unknown input `{q}` in `{}`: the inputs here have no names; write the column without a qualifier",
                            shown(Some(q))
                        )
                    } else {
                        format!(
                            "unknown input `{q}` in `{}`; available inputs: {}",
                            shown(Some(q)),
                            names.join(", ")
                        )
                    };
                    let err = ExprError::new(msg, span);
                    return Err(match suggest(q, names.iter().copied()) {
                        Some(s) => err.with_help(format!("did you mean `{s}.{name}`?")),
                        None => err,
                    });
                }
                found
            }
        };

        // Exact name first, then a unique case-insensitive match.
        for exact in [true, false] {
            let mut hits = Vec::new();
            for input in &candidates {
                let mut matching = input.schema.fields.iter().enumerate().filter(|(_, f)| {
                    if exact {
                        f.name == name
                    } else {
                        f.name.eq_ignore_ascii_case(name)
                    }
                });
                if let Some(first) = matching.next() {
                    // Within one input, a duplicate name is ambiguous only when matched loosely.
                    let extra = if exact { None } else { matching.next() };
                    hits.push((*input, first));
                    if let Some(second) = extra {
                        hits.push((*input, second));
                    }
                }
            }
            match hits.len() {
                0 => continue,
                1 => {
                    let (input, (i, field)) = hits[0];
                    return Ok((input.offset + i, field.data_type));
                }
                _ => {
                    let options: Vec<String> = hits
                        .iter()
                        .map(|(input, (_, f))| match input.qualifier {
                            Some(q) => format!("`{q}.{}`", f.name),
                            None => format!("`{}`", f.name),
                        })
                        .collect();
                    return Err(ExprError::new(
                        format!(
                            "column `{}` is ambiguous: it matches {}",
                            shown(qualifier),
                            options.join(" and ")
                        ),
                        span,
                    )
                    .with_help(format!("qualify it, e.g. {}", options[0])));
                }
            }
        }

        let available: Vec<String> = candidates
            .iter()
            .flat_map(|input| {
                input
                    .schema
                    .fields
                    .iter()
                    .map(move |f| match input.qualifier {
                        Some(q) if self.inputs.len() > 1 => format!("{q}.{}", f.name),
                        _ => f.name.clone(),
                    })
            })
            .collect();
        let mut list = available
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if available.len() > 40 {
            list.push_str(", ...");
        }
        let err = ExprError::new(
            if available.is_empty() {
                format!(
                    "unknown column `{}`: the input has no columns",
                    shown(qualifier)
                )
            } else {
                format!(
                    "unknown column `{}`; available columns: {list}",
                    shown(qualifier)
                )
            },
            span,
        );
        let names = candidates
            .iter()
            .flat_map(|input| input.schema.fields.iter().map(|f| f.name.as_str()));
        Err(match suggest(name, names) {
            Some(s) => err.with_help(format!("did you mean `{s}`?")),
            None => err,
        })
    }
}

/// A bound node with its static type.
pub(crate) struct Typed {
    pub node: Node,
    pub ty: DataType,
}

/// Binds AST nodes in one scope. `in_aggregate` is set while binding the argument of an
/// aggregate call, so that a nested aggregate gets a precise error.
pub(crate) struct Binder<'s, 'a> {
    pub scope: &'s Scope<'a>,
    pub in_aggregate: bool,
}

/// Rejects trees too deep to walk recursively (possible for trees not made by the parser).
pub(crate) fn check_depth(ast: &Ast) -> Result<(), ExprError> {
    if ast.depth() > MAX_DEPTH {
        return Err(ExprError::new(
            format!("expression is nested too deeply (more than {MAX_DEPTH} levels)"),
            ast.span.clone(),
        ));
    }
    Ok(())
}

/// The type of a literal; a DECIMAL literal's precision counts its digits (Calcite's rule,
/// `0.908` is DECIMAL(4, 3)).
pub(crate) fn literal_type(v: &Value) -> DataType {
    match v {
        Value::Null => DataType::Null,
        Value::Bool(_) => DataType::Boolean,
        Value::Int(_) => DataType::BigInt,
        Value::Float(_) => DataType::Double,
        Value::Decimal(d) => {
            let pow = crate::types::POW10[(d.scale as usize).min(18)] as u64;
            let int_part = d.unscaled.unsigned_abs() / pow;
            let int_digits = if int_part == 0 {
                1
            } else {
                int_part.ilog10() as u8 + 1
            };
            DataType::Decimal {
                precision: int_digits.saturating_add(d.scale).min(38),
                scale: d.scale,
            }
        }
        Value::Str(_) => DataType::String,
        Value::Timestamp(_) => DataType::Timestamp,
        Value::Interval(_) => DataType::Interval,
    }
}

/// (precision, scale) of an exact numeric type; BIGINT counts as DECIMAL(19, 0).
fn exact(t: DataType) -> Option<(u32, u32)> {
    match t {
        DataType::BigInt => Some((19, 0)),
        // Normalised so that precision >= scale even for a malformed schema type.
        DataType::Decimal { precision, scale } => {
            Some(((precision as u32).max(scale as u32), scale as u32))
        }
        _ => None,
    }
}

fn decimal(precision: u32, scale: u32) -> DataType {
    let scale = scale.min(38);
    DataType::Decimal {
        precision: precision.clamp(scale.max(1), 38) as u8,
        scale: scale as u8,
    }
}

/// The type both values can be converted to (CASE branches, COALESCE, IN lists), if any.
pub(crate) fn common_type(a: DataType, b: DataType) -> Option<DataType> {
    use DataType as T;
    Some(match (a, b) {
        _ if a == b => a,
        (T::Null, t) | (t, T::Null) => t,
        (T::Double, t) | (t, T::Double) if t.is_numeric() => T::Double,
        _ => {
            let ((p1, s1), (p2, s2)) = (exact(a)?, exact(b)?);
            let scale = s1.max(s2);
            decimal((p1 - s1).max(p2 - s2) + scale, scale)
        }
    })
}

/// Whether `=`/`<` between the two types is allowed.
pub(crate) fn comparable(a: DataType, b: DataType) -> bool {
    a == b || a == DataType::Null || b == DataType::Null || (a.is_numeric() && b.is_numeric())
}

/// Converts a bound value to `to`, inserting a cast only where the representation changes.
pub(crate) fn coerce(t: Typed, to: DataType) -> Typed {
    if t.ty == to || t.ty == DataType::Null || to == DataType::Null {
        return Typed {
            node: t.node,
            ty: to,
        };
    }
    let cast = match to {
        DataType::BigInt => CastTo::BigInt,
        DataType::Double => CastTo::Double,
        DataType::Decimal { precision, scale } => CastTo::Decimal { precision, scale },
        DataType::String => CastTo::String(None),
        DataType::Boolean => CastTo::Boolean,
        DataType::Timestamp => CastTo::Timestamp,
        DataType::Null | DataType::Interval => {
            return Typed {
                node: t.node,
                ty: to,
            }
        }
    };
    fold(Typed {
        node: Node::Cast {
            expr: Box::new(t.node),
            to: cast,
        },
        ty: to,
    })
}

/// Evaluates a node whose children are all literals once, at compile time.
pub(crate) fn fold(t: Typed) -> Typed {
    let foldable = !matches!(t.node, Node::Column(_) | Node::Literal(_))
        && t.node
            .children()
            .iter()
            .all(|c| matches!(c, Node::Literal(_)));
    if foldable {
        Typed {
            node: Node::Literal(t.node.eval(&[])),
            ty: t.ty,
        }
    } else {
        t
    }
}

/// Lets a STRING literal stand for a TIMESTAMP when compared with one, as in
/// `dateTime > '2026-01-01 00:00:00'`.
fn coerce_for_comparison(
    l: Typed,
    r: Typed,
    l_span: &Range<usize>,
    r_span: &Range<usize>,
) -> Result<(Typed, Typed), ExprError> {
    let as_ts = |t: Typed, span: &Range<usize>| -> Result<Typed, ExprError> {
        if let Node::Literal(Value::Str(s)) = &t.node {
            return match parse_timestamp(s.trim()) {
                Some(ts) => Ok(Typed {
                    node: Node::Literal(Value::Timestamp(ts)),
                    ty: DataType::Timestamp,
                }),
                None => Err(ExprError::new(
                    format!("cannot compare a TIMESTAMP with '{s}', which is not a timestamp"),
                    span.clone(),
                )
                .with_help("write timestamps as 'YYYY-MM-DD HH:MM:SS[.fff]'")),
            };
        }
        Ok(t)
    };
    match (l.ty, r.ty) {
        (DataType::Timestamp, DataType::String) => Ok((l, as_ts(r, r_span)?)),
        (DataType::String, DataType::Timestamp) => Ok((as_ts(l, l_span)?, r)),
        _ => Ok((l, r)),
    }
}

fn compare_error(op: &str, l: DataType, r: DataType, span: Range<usize>) -> ExprError {
    let err = ExprError::new(format!("cannot compare {l} with {r} (in `{op}`)"), span);
    if (l == DataType::String && r.is_numeric()) || (r == DataType::String && l.is_numeric()) {
        err.with_help("CAST one side, e.g. CAST(x AS BIGINT) or CAST(x AS STRING)")
    } else if l == DataType::String || r == DataType::String {
        err.with_help("CAST one side to the other's type")
    } else {
        err
    }
}

/// Types `left op right` for arithmetic with Flink's rules and builds the node.
pub(crate) fn bind_arith(
    op: ArithOp,
    symbol: &str,
    l: Typed,
    r: Typed,
    span: Range<usize>,
) -> Result<Typed, ExprError> {
    use DataType as T;
    let (lt, rt) = (l.ty, r.ty);
    let error = || {
        let what = if symbol.chars().all(|c| c.is_ascii_alphabetic()) {
            format!("cannot apply {symbol} to {lt} and {rt}")
        } else {
            format!("cannot apply `{symbol}` to {lt} and {rt}")
        };
        let err = ExprError::new(what, span.clone());
        if lt == T::String || rt == T::String {
            err.with_help("use `||` or CONCAT to join strings, or CAST the string to a number")
        } else {
            err
        }
    };
    let additive = matches!(op, ArithOp::Add | ArithOp::Sub);
    let (kind, ty) = match (lt, rt) {
        (T::Null, T::Null) => {
            return Ok(Typed {
                node: Node::Literal(Value::Null),
                ty: T::Null,
            })
        }
        (T::Timestamp, T::Interval) if additive => (ArithKind::TimeInterval, T::Timestamp),
        (T::Interval, T::Timestamp) if op == ArithOp::Add => {
            (ArithKind::TimeInterval, T::Timestamp)
        }
        (T::Interval, T::Interval) if additive => (ArithKind::IntervalInterval, T::Interval),
        (T::Interval, T::BigInt) if matches!(op, ArithOp::Mul | ArithOp::Div) => {
            (ArithKind::IntervalScale, T::Interval)
        }
        (T::BigInt, T::Interval) if op == ArithOp::Mul => (ArithKind::IntervalScale, T::Interval),
        (T::Timestamp | T::Interval, T::Null) | (T::Null, T::Timestamp | T::Interval)
            if additive =>
        {
            let ty = if lt == T::Null { rt } else { lt };
            return Ok(Typed {
                node: Node::Literal(Value::Null),
                ty,
            });
        }
        _ if lt.is_numeric() && rt.is_numeric() => {
            let lt = if lt == T::Null { rt } else { lt };
            let rt = if rt == T::Null { lt } else { rt };
            match (lt, rt) {
                (T::BigInt, T::BigInt) => (ArithKind::Int, T::BigInt),
                (T::Double, _) | (_, T::Double) => (ArithKind::Double, T::Double),
                _ => {
                    let ((p1, s1), (p2, s2)) =
                        (exact(lt).ok_or_else(error)?, exact(rt).ok_or_else(error)?);
                    let ty = match op {
                        ArithOp::Add | ArithOp::Sub => {
                            let s = s1.max(s2);
                            decimal((p1 - s1).max(p2 - s2) + s + 1, s)
                        }
                        ArithOp::Mul => decimal(p1 + p2, s1 + s2),
                        ArithOp::Div => {
                            let s = s1.max(6);
                            decimal(p1 - s1 + s2 + s, s)
                        }
                        ArithOp::Mod => {
                            let s = s1.max(s2);
                            decimal((p1 - s1).min(p2 - s2) + s, s)
                        }
                    };
                    let scale = match ty {
                        T::Decimal { scale, .. } => scale,
                        _ => 0,
                    };
                    (ArithKind::Decimal { scale }, ty)
                }
            }
        }
        _ => return Err(error()),
    };
    Ok(fold(Typed {
        node: Node::Arith {
            op,
            kind,
            left: Box::new(l.node),
            right: Box::new(r.node),
        },
        ty,
    }))
}

fn expect_boolean(t: &Typed, what: &str, span: &Range<usize>) -> Result<(), ExprError> {
    if matches!(t.ty, DataType::Boolean | DataType::Null) {
        Ok(())
    } else {
        Err(ExprError::new(
            format!("{what} must be BOOLEAN, found {}", t.ty),
            span.clone(),
        ))
    }
}

fn expect_string(t: &Typed, what: &str, span: &Range<usize>) -> Result<(), ExprError> {
    if matches!(t.ty, DataType::String | DataType::Null) {
        Ok(())
    } else {
        Err(ExprError::new(
            format!("{what} must be STRING, found {}", t.ty),
            span.clone(),
        ))
    }
}

fn castable(from: DataType, to: DataType) -> bool {
    use DataType as T;
    match to {
        _ if from == T::Null || from == to => true,
        T::String => true,
        T::BigInt | T::Double | T::Decimal { .. } | T::Boolean => {
            from.is_numeric() || matches!(from, T::String | T::Boolean)
        }
        T::Timestamp => from == T::String,
        T::Null | T::Interval => false,
    }
}

impl Binder<'_, '_> {
    /// Binds one node. This function and the `bind_*` helpers it calls before recursing are on
    /// the recursion path, so they stay small: everything else happens in non-recursive helpers.
    pub(crate) fn bind(&self, ast: &Ast) -> Result<Typed, ExprError> {
        let span = &ast.span;
        let typed = match &ast.kind {
            AstKind::Column { qualifier, name } => {
                self.bind_column(qualifier.as_deref(), name, span)
            }
            AstKind::Literal(v) => Ok(Typed {
                node: Node::Literal(v.clone()),
                ty: literal_type(v),
            }),
            AstKind::Interval(ms) => Ok(Typed {
                node: Node::Literal(Value::Interval(*ms)),
                ty: DataType::Interval,
            }),
            AstKind::Unary { op, expr } => self.bind_unary(*op, expr, span),
            AstKind::Binary { op, left, right } => self.bind_binary(*op, left, right, span),
            AstKind::Between {
                expr,
                low,
                high,
                negated,
            } => self.bind_between(expr, low, high, *negated),
            AstKind::InList {
                expr,
                list,
                negated,
            } => self.bind_in(expr, list, *negated),
            AstKind::IsNull { expr, negated } => self.bind_is_null(expr, *negated),
            AstKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => self.bind_like(expr, pattern, *escape, *negated),
            AstKind::Case {
                operand,
                branches,
                else_,
            } => self.bind_case(operand.as_deref(), branches, else_.as_deref()),
            AstKind::Cast { expr, to, length } => self.bind_cast(expr, *to, *length, span),
            AstKind::Call { .. } => self.bind_call_node(ast),
        };
        typed.map(fold)
    }

    fn bind_column(
        &self,
        qualifier: Option<&str>,
        name: &str,
        span: &Range<usize>,
    ) -> Result<Typed, ExprError> {
        let (index, ty) = self.scope.resolve(qualifier, name, span.clone())?;
        Ok(Typed {
            node: Node::Column(index),
            ty,
        })
    }

    fn bind_unary(&self, op: UnaryOp, expr: &Ast, span: &Range<usize>) -> Result<Typed, ExprError> {
        let inner = self.bind(expr)?;
        unary(op, inner, &expr.span, span)
    }

    fn bind_binary(
        &self,
        op: BinaryOp,
        left: &Ast,
        right: &Ast,
        span: &Range<usize>,
    ) -> Result<Typed, ExprError> {
        let l = self.bind(left)?;
        let r = self.bind(right)?;
        binary(op, l, r, &left.span, &right.span, span)
    }

    fn bind_between(
        &self,
        expr: &Ast,
        low: &Ast,
        high: &Ast,
        negated: bool,
    ) -> Result<Typed, ExprError> {
        let e = self.bind(expr)?;
        let lo = self.bind(low)?;
        let hi = self.bind(high)?;
        between(e, lo, hi, negated, [&expr.span, &low.span, &high.span])
    }

    fn bind_is_null(&self, expr: &Ast, negated: bool) -> Result<Typed, ExprError> {
        let inner = self.bind(expr)?;
        Ok(Typed {
            node: Node::IsNull {
                expr: Box::new(inner.node),
                negated,
            },
            ty: DataType::Boolean,
        })
    }

    fn bind_like(
        &self,
        expr: &Ast,
        pattern: &Ast,
        escape: Option<char>,
        negated: bool,
    ) -> Result<Typed, ExprError> {
        let e = self.bind(expr)?;
        let p = self.bind(pattern)?;
        like(e, p, escape, negated, &expr.span, &pattern.span)
    }

    fn bind_cast(
        &self,
        expr: &Ast,
        to: DataType,
        length: Option<StringLength>,
        span: &Range<usize>,
    ) -> Result<Typed, ExprError> {
        let inner = self.bind(expr)?;
        cast(inner, to, length, span)
    }

    fn bind_call_node(&self, ast: &Ast) -> Result<Typed, ExprError> {
        let AstKind::Call {
            name,
            args,
            distinct,
            star,
            filter,
        } = &ast.kind
        else {
            return Err(ExprError::new("expected a function call", ast.span.clone()));
        };
        check_scalar_call(
            name,
            *distinct,
            *star,
            filter.as_deref(),
            self.in_aggregate,
            &ast.span,
        )?;
        check_arity(name, args.len(), &ast.span)?;
        let typed = self.bind_all(args)?;
        type_call(name, typed, args, ast.span.clone())
    }

    fn bind_in(&self, expr: &Ast, list: &[Ast], negated: bool) -> Result<Typed, ExprError> {
        let e = self.bind(expr)?;
        let items = self.bind_all(list)?;
        in_list(e, items, expr, list, negated)
    }

    fn bind_all(&self, asts: &[Ast]) -> Result<Vec<Typed>, ExprError> {
        let mut out = Vec::with_capacity(asts.len());
        for a in asts {
            out.push(self.bind(a)?);
        }
        Ok(out)
    }

    fn bind_case(
        &self,
        operand: Option<&Ast>,
        branches: &[(Ast, Ast)],
        else_: Option<&Ast>,
    ) -> Result<Typed, ExprError> {
        let operand_typed = match operand {
            Some(o) => Some(self.bind(o)?),
            None => None,
        };
        let mut bound = Vec::with_capacity(branches.len());
        for (when, then) in branches {
            let w = self.bind(when)?;
            let t = self.bind(then)?;
            bound.push((w, t));
        }
        let else_typed = match else_ {
            Some(e) => Some(self.bind(e)?),
            None => None,
        };
        case(operand_typed, bound, else_typed, operand, branches, else_)
    }
}

fn in_list(
    mut e: Typed,
    bound: Vec<Typed>,
    expr: &Ast,
    list: &[Ast],
    negated: bool,
) -> Result<Typed, ExprError> {
    let mut items = Vec::with_capacity(bound.len());
    for (t, item) in bound.into_iter().zip(list) {
        let (e2, t) = coerce_for_comparison(e, t, &expr.span, &item.span)?;
        e = e2;
        if !comparable(e.ty, t.ty) {
            return Err(compare_error("IN", e.ty, t.ty, item.span.clone()));
        }
        items.push(t);
    }
    // Many literals of a hashable type: a hash set instead of a scan.
    let hashable = matches!(e.ty, DataType::BigInt | DataType::String)
        && items.iter().all(|t| {
            (t.ty == e.ty || t.ty == DataType::Null) && matches!(t.node, Node::Literal(_))
        });
    let node = if hashable && items.len() >= 8 {
        let mut set = FxHashSet::default();
        let mut has_null = false;
        for t in items {
            if let Node::Literal(v) = t.node {
                if v.is_null() {
                    has_null = true;
                } else {
                    set.insert(v);
                }
            }
        }
        Node::InSet {
            expr: Box::new(e.node),
            set: Box::new(set),
            has_null,
            negated,
        }
    } else {
        Node::InList {
            expr: Box::new(e.node),
            list: items.into_iter().map(|t| t.node).collect(),
            negated,
        }
    };
    Ok(Typed {
        node,
        ty: DataType::Boolean,
    })
}

fn case(
    mut operand_typed: Option<Typed>,
    bound: Vec<(Typed, Typed)>,
    else_typed: Option<Typed>,
    operand: Option<&Ast>,
    branches: &[(Ast, Ast)],
    else_: Option<&Ast>,
) -> Result<Typed, ExprError> {
    let mut conditions = Vec::with_capacity(bound.len());
    let mut results = Vec::with_capacity(bound.len());
    let mut ty = DataType::Null;
    for ((w, t), (when, then)) in bound.into_iter().zip(branches) {
        let w = match (operand_typed.take(), operand) {
            (Some(o), Some(o_ast)) => {
                let (o, w) = coerce_for_comparison(o, w, &o_ast.span, &when.span)?;
                if !comparable(o.ty, w.ty) {
                    return Err(compare_error("CASE", o.ty, w.ty, when.span.clone()));
                }
                operand_typed = Some(o);
                w
            }
            _ => {
                expect_boolean(&w, "a WHEN condition", &when.span)?;
                w
            }
        };
        conditions.push(w);
        ty = common_type(ty, t.ty).ok_or_else(|| {
            ExprError::new(
                format!(
                    "this CASE branch has type {}, which does not match {ty}",
                    t.ty
                ),
                then.span.clone(),
            )
        })?;
        results.push(t);
    }
    let else_typed = match (else_typed, else_) {
        (Some(t), Some(e)) => {
            ty = common_type(ty, t.ty).ok_or_else(|| {
                ExprError::new(
                    format!(
                        "the ELSE branch has type {}, which does not match {ty}",
                        t.ty
                    ),
                    e.span.clone(),
                )
            })?;
            t
        }
        _ => Typed {
            node: Node::Literal(Value::Null),
            ty: DataType::Null,
        },
    };
    let branches = conditions
        .into_iter()
        .zip(results)
        .map(|(w, t)| (w.node, coerce(t, ty).node))
        .collect();
    Ok(Typed {
        node: Node::Case {
            operand: operand_typed.map(|o| Box::new(o.node)),
            branches,
            else_: Box::new(coerce(else_typed, ty).node),
        },
        ty,
    })
}

// ---- non-recursive typing helpers (called after the operands are bound) ----------------------

fn unary(
    op: UnaryOp,
    inner: Typed,
    operand_span: &Range<usize>,
    span: &Range<usize>,
) -> Result<Typed, ExprError> {
    match op {
        UnaryOp::Not => {
            expect_boolean(&inner, "the operand of NOT", operand_span)?;
            Ok(Typed {
                node: Node::Not(Box::new(inner.node)),
                ty: DataType::Boolean,
            })
        }
        UnaryOp::Neg => {
            if !(inner.ty.is_numeric() || inner.ty == DataType::Interval) {
                return Err(ExprError::new(
                    format!("cannot apply unary `-` to {}", inner.ty),
                    span.clone(),
                ));
            }
            Ok(Typed {
                node: Node::Neg(Box::new(inner.node)),
                ty: inner.ty,
            })
        }
    }
}

fn binary(
    op: BinaryOp,
    l: Typed,
    r: Typed,
    left: &Range<usize>,
    right: &Range<usize>,
    span: &Range<usize>,
) -> Result<Typed, ExprError> {
    let span = span.clone();
    let cmp = match op {
        BinaryOp::Eq => Some(CmpOp::Eq),
        BinaryOp::NotEq => Some(CmpOp::Ne),
        BinaryOp::Lt => Some(CmpOp::Lt),
        BinaryOp::LtEq => Some(CmpOp::Le),
        BinaryOp::Gt => Some(CmpOp::Gt),
        BinaryOp::GtEq => Some(CmpOp::Ge),
        _ => None,
    };
    if let Some(cmp) = cmp {
        let (l, r) = coerce_for_comparison(l, r, left, right)?;
        if !comparable(l.ty, r.ty) {
            return Err(compare_error(op.symbol(), l.ty, r.ty, span));
        }
        return Ok(Typed {
            node: Node::Compare {
                op: cmp,
                left: Box::new(l.node),
                right: Box::new(r.node),
            },
            ty: DataType::Boolean,
        });
    }
    let arith = match op {
        BinaryOp::Add => ArithOp::Add,
        BinaryOp::Sub => ArithOp::Sub,
        BinaryOp::Mul => ArithOp::Mul,
        BinaryOp::Div => ArithOp::Div,
        BinaryOp::Mod => ArithOp::Mod,
        BinaryOp::And | BinaryOp::Or => {
            let word = op.symbol();
            expect_boolean(&l, &format!("the left operand of {word}"), left)?;
            expect_boolean(&r, &format!("the right operand of {word}"), right)?;
            let (a, b) = (Box::new(l.node), Box::new(r.node));
            return Ok(Typed {
                node: if op == BinaryOp::And {
                    Node::And(a, b)
                } else {
                    Node::Or(a, b)
                },
                ty: DataType::Boolean,
            });
        }
        BinaryOp::Concat => {
            if !(matches!(l.ty, DataType::String | DataType::Null)
                && matches!(r.ty, DataType::String | DataType::Null))
            {
                return Err(ExprError::new(
                    format!("cannot apply `||` to {} and {}", l.ty, r.ty),
                    span,
                )
                .with_help("CAST non-string operands, e.g. CAST(x AS STRING)"));
            }
            return Ok(Typed {
                node: Node::Concat(Box::new(l.node), Box::new(r.node)),
                ty: DataType::String,
            });
        }
        _ => unreachable_op(op, &span)?,
    };
    bind_arith(arith, op.symbol(), l, r, span)
}

fn between(
    e: Typed,
    lo: Typed,
    hi: Typed,
    negated: bool,
    spans: [&Range<usize>; 3],
) -> Result<Typed, ExprError> {
    let (e, lo) = coerce_for_comparison(e, lo, spans[0], spans[1])?;
    let (e, hi) = coerce_for_comparison(e, hi, spans[0], spans[2])?;
    for (bound, span) in [(&lo, spans[1]), (&hi, spans[2])] {
        if !comparable(e.ty, bound.ty) {
            return Err(compare_error("BETWEEN", e.ty, bound.ty, span.clone()));
        }
    }
    Ok(Typed {
        node: Node::Between {
            expr: Box::new(e.node),
            low: Box::new(lo.node),
            high: Box::new(hi.node),
            negated,
        },
        ty: DataType::Boolean,
    })
}

fn like(
    e: Typed,
    p: Typed,
    escape: Option<char>,
    negated: bool,
    expr_span: &Range<usize>,
    pattern_span: &Range<usize>,
) -> Result<Typed, ExprError> {
    expect_string(&e, "the left side of LIKE", expr_span)?;
    expect_string(&p, "the pattern of LIKE", pattern_span)?;
    let node = match &p.node {
        Node::Literal(Value::Str(text)) => Node::Like {
            expr: Box::new(e.node),
            matcher: Box::new(
                LikeMatcher::compile(text, escape)
                    .map_err(|m| ExprError::new(m, pattern_span.clone()))?,
            ),
            negated,
        },
        _ => Node::LikeDynamic {
            expr: Box::new(e.node),
            pattern: Box::new(p.node),
            escape,
            negated,
        },
    };
    Ok(Typed {
        node,
        ty: DataType::Boolean,
    })
}

fn cast(
    inner: Typed,
    to: DataType,
    length: Option<StringLength>,
    span: &Range<usize>,
) -> Result<Typed, ExprError> {
    if !castable(inner.ty, to) {
        return Err(ExprError::new(
            format!("cannot cast {} to {to}", inner.ty),
            span.clone(),
        ));
    }
    if inner.ty == to && length.is_none() {
        return Ok(inner);
    }
    let cast = match to {
        DataType::BigInt => CastTo::BigInt,
        DataType::Double => CastTo::Double,
        DataType::Decimal { precision, scale } => CastTo::Decimal { precision, scale },
        DataType::String => CastTo::String(length),
        DataType::Boolean => CastTo::Boolean,
        DataType::Timestamp => CastTo::Timestamp,
        DataType::Null | DataType::Interval => {
            return Err(ExprError::new(format!("cannot cast to {to}"), span.clone()))
        }
    };
    Ok(Typed {
        node: Node::Cast {
            expr: Box::new(inner.node),
            to: cast,
        },
        ty: to,
    })
}

/// Rejects aggregate-only syntax in a scalar call.
fn check_scalar_call(
    name: &str,
    distinct: bool,
    star: bool,
    filter: Option<&Ast>,
    in_aggregate: bool,
    span: &Range<usize>,
) -> Result<(), ExprError> {
    let upper = name.to_ascii_uppercase();
    if super::ast::AGGREGATE_NAMES.contains(&name) {
        return Err(if in_aggregate {
            ExprError::new(
                format!("aggregate calls cannot be nested: {upper} inside an aggregate"),
                span.clone(),
            )
        } else {
            ExprError::new(
                format!("aggregate function {upper} is not allowed here"),
                span.clone(),
            )
            .with_help(AGGREGATE_HINT)
        });
    }
    if star {
        return Err(ExprError::new(
            format!("{upper}(*) is not allowed: `*` is only allowed in COUNT(*)"),
            span.clone(),
        ));
    }
    if distinct {
        return Err(ExprError::new(
            format!("DISTINCT is only allowed in aggregate calls, not in {upper}"),
            span.clone(),
        ));
    }
    if let Some(f) = filter {
        return Err(ExprError::new(
            format!("FILTER is only allowed on aggregate calls, not on {upper}"),
            f.span.clone(),
        ));
    }
    Ok(())
}

fn unreachable_op(op: BinaryOp, span: &Range<usize>) -> Result<ArithOp, ExprError> {
    Err(ExprError::new(
        format!("operator `{}` cannot be used here", op.symbol()),
        span.clone(),
    ))
}

/// The result type of an aggregate over an argument type (Flink's rules), or an error message.
pub(crate) fn aggregate_type(
    function: AggregateFunction,
    arg: Option<DataType>,
) -> Result<DataType, String> {
    use DataType as T;
    let name = format!("{function:?}").to_ascii_uppercase();
    match (function, arg) {
        (AggregateFunction::Count, _) => Ok(T::BigInt),
        (_, None) => Err(format!("{name} needs an argument")),
        (AggregateFunction::Sum | AggregateFunction::Avg, Some(t)) => match t {
            T::BigInt => Ok(T::BigInt),
            T::Double => Ok(T::Double),
            T::Decimal { scale, .. } if function == AggregateFunction::Sum => {
                Ok(decimal(38, scale as u32))
            }
            T::Decimal { scale, .. } => Ok(decimal(38, (scale as u32).max(6))),
            other => Err(format!("{name} needs a numeric argument, found {other}")),
        },
        (AggregateFunction::Min | AggregateFunction::Max, Some(T::Null)) => {
            Err(format!("{name} needs a typed argument, found NULL"))
        }
        (AggregateFunction::Min | AggregateFunction::Max, Some(t)) => Ok(t),
    }
}

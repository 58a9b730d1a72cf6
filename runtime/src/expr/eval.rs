//! The compiled form of an expression and its per-row evaluation.
//!
//! Binding resolved every name and type, so evaluation is a walk over enum nodes with column
//! indices, arithmetic kinds and patterns fixed in advance. Nothing here can panic on data: a
//! value of an unexpected variant, an overflow or a division by zero yields NULL.

use super::ast::StringLength;
use super::functions::{Func, LikeMatcher};
use crate::types::{
    compare_values, format_timestamp, parse_timestamp, Decimal, Timestamp, Value, POW10,
};
use rustc_hash::FxHashSet;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// Borrowed by `eval_ref` for out-of-range columns, so that a short row yields NULL, not a panic.
pub(crate) static NULL: Value = Value::Null;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// Which arithmetic the type checker chose, so evaluation need not re-derive it per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithKind {
    /// BIGINT with BIGINT: wrapping like Java `long`.
    Int,
    /// Anything with a DOUBLE.
    Double,
    /// DECIMAL with DECIMAL or BIGINT, result at this scale.
    Decimal { scale: u8 },
    /// TIMESTAMP ± INTERVAL (or INTERVAL + TIMESTAMP).
    TimeInterval,
    /// INTERVAL ± INTERVAL.
    IntervalInterval,
    /// INTERVAL * BIGINT, BIGINT * INTERVAL, INTERVAL / BIGINT.
    IntervalScale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn test(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

/// The target of a CAST (or of an implicit coercion to a common type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CastTo {
    BigInt,
    Double,
    Decimal { precision: u8, scale: u8 },
    String(Option<StringLength>),
    Boolean,
    Timestamp,
}

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Column(usize),
    Literal(Value),
    Neg(Box<Node>),
    Arith {
        op: ArithOp,
        kind: ArithKind,
        left: Box<Node>,
        right: Box<Node>,
    },
    Concat(Box<Node>, Box<Node>),
    Compare {
        op: CmpOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    IsNull {
        expr: Box<Node>,
        negated: bool,
    },
    Between {
        expr: Box<Node>,
        low: Box<Node>,
        high: Box<Node>,
        negated: bool,
    },
    InList {
        expr: Box<Node>,
        list: Vec<Node>,
        negated: bool,
    },
    /// IN over many literals of a hashable type (BIGINT or STRING on both sides).
    InSet {
        expr: Box<Node>,
        set: Box<FxHashSet<Value>>,
        has_null: bool,
        negated: bool,
    },
    /// LIKE with a literal pattern, compiled once.
    Like {
        expr: Box<Node>,
        matcher: Box<LikeMatcher>,
        negated: bool,
    },
    /// LIKE with a computed pattern, compiled per row.
    LikeDynamic {
        expr: Box<Node>,
        pattern: Box<Node>,
        escape: Option<char>,
        negated: bool,
    },
    /// Searched CASE (`operand` None) or simple CASE; branch results are already coerced.
    Case {
        operand: Option<Box<Node>>,
        branches: Vec<(Node, Node)>,
        else_: Box<Node>,
    },
    Cast {
        expr: Box<Node>,
        to: CastTo,
    },
    Call {
        func: Box<Func>,
        args: Vec<Node>,
    },
}

impl Node {
    /// The direct children, for compile-time passes (constant folding).
    pub(crate) fn children(&self) -> Vec<&Node> {
        match self {
            Node::Column(_) | Node::Literal(_) => Vec::new(),
            Node::Neg(e) | Node::Not(e) => vec![e],
            Node::IsNull { expr, .. }
            | Node::InSet { expr, .. }
            | Node::Like { expr, .. }
            | Node::Cast { expr, .. } => vec![expr],
            Node::Arith { left, right, .. }
            | Node::Compare { left, right, .. }
            | Node::Concat(left, right)
            | Node::And(left, right)
            | Node::Or(left, right) => vec![left, right],
            Node::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            Node::InList { expr, list, .. } => {
                let mut v: Vec<&Node> = vec![expr];
                v.extend(list.iter());
                v
            }
            Node::LikeDynamic { expr, pattern, .. } => vec![expr, pattern],
            Node::Case {
                operand,
                branches,
                else_,
            } => {
                let mut v: Vec<&Node> = operand.iter().map(|b| &**b).collect();
                for (w, t) in branches {
                    v.push(w);
                    v.push(t);
                }
                v.push(else_);
                v
            }
            Node::Call { args, .. } => args.iter().collect(),
        }
    }

    /// The value of this expression for a row. Each arm delegates to a helper so that this
    /// function, which recursion passes through, keeps a small stack frame in debug builds.
    pub(crate) fn eval(&self, row: &[Value]) -> Value {
        match self {
            Node::Column(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Node::Literal(v) => v.clone(),
            Node::Neg(e) => negate(&e.eval_ref(row)),
            Node::Arith {
                op,
                kind,
                left,
                right,
            } => eval_arith(*op, *kind, left, right, row),
            Node::Concat(l, r) => eval_concat(l, r, row),
            Node::Case {
                operand,
                branches,
                else_,
            } => eval_case(operand.as_deref(), branches, else_, row),
            Node::Cast { expr, to } => eval_cast(expr, *to, row),
            Node::Call { func, args } => func.eval(args, row),
            Node::Compare { .. }
            | Node::And(..)
            | Node::Or(..)
            | Node::Not(_)
            | Node::IsNull { .. }
            | Node::Between { .. }
            | Node::InList { .. }
            | Node::InSet { .. }
            | Node::Like { .. }
            | Node::LikeDynamic { .. } => bool_value(self.eval_bool(row)),
        }
    }

    /// Like `eval`, but borrows columns and literals instead of cloning them, so comparisons and
    /// string functions on columns touch no reference counts and allocate nothing.
    #[inline]
    pub(crate) fn eval_ref<'a>(&'a self, row: &'a [Value]) -> Cow<'a, Value> {
        match self {
            Node::Column(i) => Cow::Borrowed(row.get(*i).unwrap_or(&NULL)),
            Node::Literal(v) => Cow::Borrowed(v),
            _ => Cow::Owned(self.eval(row)),
        }
    }

    /// Three-valued boolean evaluation without building a `Value` (None is NULL).
    pub(crate) fn eval_bool(&self, row: &[Value]) -> Option<bool> {
        match self {
            Node::Column(i) => row.get(*i).and_then(Value::as_bool),
            Node::Literal(v) => v.as_bool(),
            Node::Compare { op, left, right } => eval_compare(*op, left, right, row),
            Node::And(l, r) => eval_and(l, r, row),
            Node::Or(l, r) => eval_or(l, r, row),
            Node::Not(e) => e.eval_bool(row).map(|b| !b),
            Node::IsNull { expr, negated } => Some(expr.eval_ref(row).is_null() != *negated),
            Node::Between {
                expr,
                low,
                high,
                negated,
            } => eval_between(expr, low, high, *negated, row),
            Node::InList {
                expr,
                list,
                negated,
            } => eval_in_list(expr, list, *negated, row),
            Node::InSet {
                expr,
                set,
                has_null,
                negated,
            } => eval_in_set(expr, set, *has_null, *negated, row),
            Node::Like {
                expr,
                matcher,
                negated,
            } => eval_like(expr, matcher, *negated, row),
            Node::LikeDynamic {
                expr,
                pattern,
                escape,
                negated,
            } => eval_like_dynamic(expr, pattern, *escape, *negated, row),
            _ => self.eval(row).as_bool(),
        }
    }
}

#[inline]
fn bool_value(b: Option<bool>) -> Value {
    match b {
        Some(b) => Value::Bool(b),
        None => Value::Null,
    }
}

#[inline]
fn eval_arith(op: ArithOp, kind: ArithKind, left: &Node, right: &Node, row: &[Value]) -> Value {
    arith(op, kind, &left.eval_ref(row), &right.eval_ref(row))
}

#[inline]
fn eval_cast(expr: &Node, to: CastTo, row: &[Value]) -> Value {
    cast_value(&expr.eval_ref(row), to)
}

fn eval_concat(l: &Node, r: &Node, row: &[Value]) -> Value {
    let a = l.eval_ref(row);
    let b = r.eval_ref(row);
    match (a.as_ref(), b.as_ref()) {
        (Value::Str(x), Value::Str(y)) => {
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(x);
            s.push_str(y);
            Value::Str(Arc::from(s))
        }
        _ => Value::Null,
    }
}

fn eval_case(
    operand: Option<&Node>,
    branches: &[(Node, Node)],
    else_: &Node,
    row: &[Value],
) -> Value {
    match operand {
        None => {
            for (when, then) in branches {
                if when.eval_bool(row) == Some(true) {
                    return then.eval(row);
                }
            }
        }
        Some(operand) => {
            let v = operand.eval_ref(row);
            if !v.is_null() {
                for (when, then) in branches {
                    if compare(CmpOp::Eq, &v, &when.eval_ref(row)) == Some(true) {
                        return then.eval(row);
                    }
                }
            }
        }
    }
    else_.eval(row)
}

#[inline]
fn eval_compare(op: CmpOp, left: &Node, right: &Node, row: &[Value]) -> Option<bool> {
    compare(op, &left.eval_ref(row), &right.eval_ref(row))
}

#[inline]
fn eval_and(l: &Node, r: &Node, row: &[Value]) -> Option<bool> {
    let a = l.eval_bool(row);
    if a == Some(false) {
        return Some(false);
    }
    match (a, r.eval_bool(row)) {
        (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

#[inline]
fn eval_or(l: &Node, r: &Node, row: &[Value]) -> Option<bool> {
    let a = l.eval_bool(row);
    if a == Some(true) {
        return Some(true);
    }
    match (a, r.eval_bool(row)) {
        (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn eval_between(
    expr: &Node,
    low: &Node,
    high: &Node,
    negated: bool,
    row: &[Value],
) -> Option<bool> {
    let v = expr.eval_ref(row);
    if v.is_null() {
        return None;
    }
    let ge = compare(CmpOp::Ge, &v, &low.eval_ref(row));
    if ge == Some(false) {
        return Some(negated);
    }
    let le = compare(CmpOp::Le, &v, &high.eval_ref(row));
    let inside = match (ge, le) {
        (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    inside.map(|b| b != negated)
}

fn eval_in_list(expr: &Node, list: &[Node], negated: bool, row: &[Value]) -> Option<bool> {
    let v = expr.eval_ref(row);
    if v.is_null() {
        return None;
    }
    let mut saw_null = false;
    for item in list {
        match compare(CmpOp::Eq, &v, &item.eval_ref(row)) {
            Some(true) => return Some(!negated),
            Some(false) => {}
            None => saw_null = true,
        }
    }
    if saw_null {
        None
    } else {
        Some(negated)
    }
}

fn eval_in_set(
    expr: &Node,
    set: &FxHashSet<Value>,
    has_null: bool,
    negated: bool,
    row: &[Value],
) -> Option<bool> {
    let v = expr.eval_ref(row);
    if v.is_null() {
        None
    } else if set.contains(v.as_ref()) {
        Some(!negated)
    } else if has_null {
        None
    } else {
        Some(negated)
    }
}

#[inline]
fn eval_like(expr: &Node, matcher: &LikeMatcher, negated: bool, row: &[Value]) -> Option<bool> {
    let v = expr.eval_ref(row);
    let s = v.as_str()?;
    Some(matcher.matches(s) != negated)
}

fn eval_like_dynamic(
    expr: &Node,
    pattern: &Node,
    escape: Option<char>,
    negated: bool,
    row: &[Value],
) -> Option<bool> {
    let v = expr.eval_ref(row);
    let p = pattern.eval_ref(row);
    let (s, p) = (v.as_str()?, p.as_str()?);
    let matcher = LikeMatcher::compile(p, escape).ok()?;
    Some(matcher.matches(s) != negated)
}

/// A SQL comparison: None when either side is NULL or the values are incomparable (NaN).
#[inline]
pub(crate) fn compare(op: CmpOp, a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(op.test(x.cmp(y))),
        (Value::Str(x), Value::Str(y)) if op == CmpOp::Eq => Some(x == y),
        (Value::Str(x), Value::Str(y)) if op == CmpOp::Ne => Some(x != y),
        _ => compare_values(a, b).map(|o| op.test(o)),
    }
}

fn negate(v: &Value) -> Value {
    match v {
        Value::Int(x) => Value::Int(x.wrapping_neg()),
        Value::Float(x) => Value::Float(-x),
        Value::Decimal(d) => d.unscaled.checked_neg().map_or(Value::Null, |u| {
            Value::Decimal(Decimal {
                unscaled: u,
                scale: d.scale,
            })
        }),
        Value::Interval(x) => x.checked_neg().map_or(Value::Null, Value::Interval),
        _ => Value::Null,
    }
}

pub(crate) fn arith(op: ArithOp, kind: ArithKind, a: &Value, b: &Value) -> Value {
    match kind {
        ArithKind::Int => match (a, b) {
            (Value::Int(x), Value::Int(y)) => int_arith(op, *x, *y).map_or(Value::Null, Value::Int),
            _ => Value::Null,
        },
        ArithKind::Double => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => double_arith(op, x, y).map_or(Value::Null, Value::Float),
            _ => Value::Null,
        },
        ArithKind::Decimal { scale } => match (to_decimal(a), to_decimal(b)) {
            (Some(x), Some(y)) => {
                decimal_arith(op, x, y, scale).map_or(Value::Null, Value::Decimal)
            }
            _ => Value::Null,
        },
        ArithKind::TimeInterval => {
            let r = match (a, b, op) {
                (Value::Timestamp(t), Value::Interval(i), ArithOp::Add)
                | (Value::Interval(i), Value::Timestamp(t), ArithOp::Add) => t.checked_add(*i),
                (Value::Timestamp(t), Value::Interval(i), ArithOp::Sub) => t.checked_sub(*i),
                _ => None,
            };
            r.map_or(Value::Null, Value::Timestamp)
        }
        ArithKind::IntervalInterval => {
            let r = match (a, b, op) {
                (Value::Interval(x), Value::Interval(y), ArithOp::Add) => x.checked_add(*y),
                (Value::Interval(x), Value::Interval(y), ArithOp::Sub) => x.checked_sub(*y),
                _ => None,
            };
            r.map_or(Value::Null, Value::Interval)
        }
        ArithKind::IntervalScale => {
            let r = match (a, b, op) {
                (Value::Interval(x), Value::Int(n), ArithOp::Mul)
                | (Value::Int(n), Value::Interval(x), ArithOp::Mul) => x.checked_mul(*n),
                (Value::Interval(x), Value::Int(n), ArithOp::Div) => x.checked_div(*n),
                _ => None,
            };
            r.map_or(Value::Null, Value::Interval)
        }
    }
}

/// BIGINT arithmetic as Java `long` does it (wrapping), except that dividing by zero is NULL.
fn int_arith(op: ArithOp, x: i64, y: i64) -> Option<i64> {
    Some(match op {
        ArithOp::Add => x.wrapping_add(y),
        ArithOp::Sub => x.wrapping_sub(y),
        ArithOp::Mul => x.wrapping_mul(y),
        ArithOp::Div if y == 0 => return None,
        ArithOp::Div => x.wrapping_div(y),
        ArithOp::Mod if y == 0 => return None,
        ArithOp::Mod => x.wrapping_rem(y),
    })
}

fn double_arith(op: ArithOp, x: f64, y: f64) -> Option<f64> {
    Some(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div if y == 0.0 => return None,
        ArithOp::Div => x / y,
        ArithOp::Mod if y == 0.0 => return None,
        ArithOp::Mod => x % y,
    })
}

/// A BIGINT or DECIMAL value as a decimal.
pub(crate) fn to_decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Decimal(d) => Some(*d),
        Value::Int(i) => Some(Decimal {
            unscaled: *i,
            scale: 0,
        }),
        _ => None,
    }
}

pub(crate) fn pow10_i128(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

/// `num / den` rounded half away from zero (Java's HALF_UP); `den` must not be zero.
pub(crate) fn div_round_half_up(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if r != 0 && r.unsigned_abs() * 2 >= den.unsigned_abs() {
        if (num < 0) == (den < 0) {
            q + 1
        } else {
            q - 1
        }
    } else {
        q
    }
}

fn fit(unscaled: i128, scale: u8) -> Option<Decimal> {
    Some(Decimal {
        unscaled: i64::try_from(unscaled).ok()?,
        scale,
    })
}

/// An exact unscaled value at `from` scale brought to `to` scale, rounding half up.
fn rescale_i128(unscaled: i128, from: u32, to: u32) -> Option<i128> {
    if to >= from {
        unscaled.checked_mul(pow10_i128(to - from)?)
    } else {
        Some(div_round_half_up(unscaled, pow10_i128(from - to)?))
    }
}

/// A decimal at another scale, rounding half up when the scale shrinks; None on overflow.
pub(crate) fn rescale_round(d: Decimal, scale: u8) -> Option<Decimal> {
    fit(
        rescale_i128(d.unscaled as i128, d.scale.into(), scale.into())?,
        scale,
    )
}

fn decimal_arith(op: ArithOp, x: Decimal, y: Decimal, scale: u8) -> Option<Decimal> {
    let (a, b) = (x.unscaled as i128, y.unscaled as i128);
    match op {
        ArithOp::Add | ArithOp::Sub => {
            let common = u32::from(x.scale.max(y.scale));
            let a = rescale_i128(a, x.scale.into(), common)?;
            let b = rescale_i128(b, y.scale.into(), common)?;
            let sum = if op == ArithOp::Add { a + b } else { a - b };
            fit(rescale_i128(sum, common, scale.into())?, scale)
        }
        ArithOp::Mul => {
            let product = a.checked_mul(b)?;
            fit(
                rescale_i128(
                    product,
                    u32::from(x.scale) + u32::from(y.scale),
                    scale.into(),
                )?,
                scale,
            )
        }
        ArithOp::Div => {
            if b == 0 {
                return None;
            }
            // a/10^xs / (b/10^ys) at scale s: a * 10^(s + ys - xs) / b.
            let exp = scale as i32 + y.scale as i32 - x.scale as i32;
            let (num, den) = if exp >= 0 {
                (a.checked_mul(pow10_i128(exp as u32)?)?, b)
            } else {
                (a, b.checked_mul(pow10_i128((-exp) as u32)?)?)
            };
            fit(div_round_half_up(num, den), scale)
        }
        ArithOp::Mod => {
            let common = u32::from(x.scale.max(y.scale));
            let a = rescale_i128(a, x.scale.into(), common)?;
            let b = rescale_i128(b, y.scale.into(), common)?;
            if b == 0 {
                return None;
            }
            fit(rescale_i128(a % b, common, scale.into())?, scale)
        }
    }
}

// ---- casts ----------------------------------------------------------------------------------

/// Converts a value for CAST: failures (unparsable text, overflow) give NULL, as Flink does.
pub(crate) fn cast_value(v: &Value, to: CastTo) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match to {
        CastTo::BigInt => match v {
            Value::Int(i) => Value::Int(*i),
            // Java's (long) cast: saturating, NaN -> 0, exactly like Rust's `as`.
            Value::Float(f) => Value::Int(*f as i64),
            Value::Decimal(d) => Value::Int(d.unscaled / POW10[(d.scale as usize).min(18)]),
            Value::Bool(b) => Value::Int(*b as i64),
            Value::Str(s) => parse_bigint(s).map_or(Value::Null, Value::Int),
            _ => Value::Null,
        },
        CastTo::Double => match v {
            Value::Str(s) => s.trim().parse::<f64>().map_or(Value::Null, Value::Float),
            Value::Bool(b) => Value::Float(if *b { 1.0 } else { 0.0 }),
            other => other.as_f64().map_or(Value::Null, Value::Float),
        },
        CastTo::Decimal { precision, scale } => {
            let d = match v {
                Value::Int(i) => rescale_round(
                    Decimal {
                        unscaled: *i,
                        scale: 0,
                    },
                    scale,
                ),
                Value::Decimal(d) => rescale_round(*d, scale),
                Value::Float(f) => f64_to_decimal(*f, scale),
                Value::Bool(b) => rescale_round(
                    Decimal {
                        unscaled: *b as i64,
                        scale: 0,
                    },
                    scale,
                ),
                Value::Str(s) => parse_decimal(s.trim(), scale),
                _ => None,
            };
            match d {
                Some(d) if fits_precision(d, precision) => Value::Decimal(d),
                _ => Value::Null,
            }
        }
        CastTo::String(length) => {
            let text: Cow<'_, str> = match v {
                Value::Str(s) => {
                    if length.is_none() {
                        return v.clone();
                    }
                    Cow::Borrowed(s)
                }
                other => match value_to_string(other) {
                    Some(s) => Cow::Owned(s),
                    None => return Value::Null,
                },
            };
            match length {
                None => Value::str(&text),
                Some(StringLength::Varchar(n)) => match text.char_indices().nth(n as usize) {
                    Some((cut, _)) => Value::str(&text[..cut]),
                    None => Value::str(&text),
                },
                Some(StringLength::Char(n)) => {
                    let n = n as usize;
                    match text.char_indices().nth(n) {
                        Some((cut, _)) => Value::str(&text[..cut]),
                        None => {
                            let count = text.chars().count();
                            let mut s = String::with_capacity(text.len() + n - count);
                            s.push_str(&text);
                            s.extend(std::iter::repeat_n(' ', n - count));
                            Value::Str(Arc::from(s))
                        }
                    }
                }
            }
        }
        CastTo::Boolean => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Bool(*i != 0),
            Value::Decimal(d) => Value::Bool(d.unscaled != 0),
            Value::Float(f) => Value::Bool(*f != 0.0),
            Value::Str(s) => parse_bool(s).map_or(Value::Null, Value::Bool),
            _ => Value::Null,
        },
        CastTo::Timestamp => match v {
            Value::Timestamp(t) => Value::Timestamp(*t),
            Value::Str(s) => parse_timestamp(s.trim()).map_or(Value::Null, Value::Timestamp),
            _ => Value::Null,
        },
    }
}

fn fits_precision(d: Decimal, precision: u8) -> bool {
    match POW10.get(precision as usize) {
        Some(limit) => d.unscaled.unsigned_abs() < *limit as u64,
        None => true,
    }
}

/// Integer text, as Flink casts it: surrounding blanks allowed, a fraction is truncated.
fn parse_bigint(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(i);
    }
    let d = Decimal::parse(t)?;
    Some(d.unscaled / POW10[(d.scale as usize).min(18)])
}

/// Decimal text (or exponent notation) at a given scale, rounding half up.
fn parse_decimal(t: &str, scale: u8) -> Option<Decimal> {
    match Decimal::parse(t.strip_prefix('+').unwrap_or(t)) {
        Some(d) => rescale_round(d, scale),
        None => f64_to_decimal(t.parse::<f64>().ok()?, scale),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    let t = s.trim();
    const TRUE: [&str; 5] = ["true", "t", "yes", "y", "1"];
    const FALSE: [&str; 5] = ["false", "f", "no", "n", "0"];
    if TRUE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Some(false)
    } else {
        None
    }
}

/// The shortest decimal digits of a double, as Java's `Double.toString` / `BigDecimal.valueOf`
/// see it: (negative, digits, exponent of the first digit).
fn shortest_digits(x: f64) -> (bool, Vec<u8>, i32) {
    let s = format!("{:e}", x.abs());
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    (x.is_sign_negative(), digits, exp.parse().unwrap_or(0))
}

/// Rounds the shortest-digit form of `x` half up at 10^-`places`: the integer count of
/// 10^-`places` units (an "unscaled" value), exactly as `BigDecimal.valueOf(x).setScale(places,
/// HALF_UP)` computes it.
fn round_digits(x: f64, places: i32) -> Option<i128> {
    let (negative, digits, exp) = shortest_digits(x);
    // Digit k has the place value 10^(exp - k); keep those at or above 10^-places.
    let keep = exp + places + 1;
    let mut unscaled: i128 = 0;
    if keep >= digits.len() as i32 {
        for d in &digits {
            unscaled = unscaled.checked_mul(10)?.checked_add(*d as i128)?;
        }
        unscaled = unscaled.checked_mul(pow10_i128((keep - digits.len() as i32) as u32)?)?;
    } else if keep >= 0 {
        for d in &digits[..keep as usize] {
            unscaled = unscaled * 10 + *d as i128;
        }
        if digits[keep as usize] >= 5 {
            unscaled += 1;
        }
    }
    Some(if negative { -unscaled } else { unscaled })
}

/// A double as a decimal of the given scale (NULL for NaN, infinities and overflow).
pub(crate) fn f64_to_decimal(x: f64, scale: u8) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    fit(round_digits(x, scale as i32)?, scale)
}

/// ROUND(double, places) as Flink computes it (via `BigDecimal.valueOf`, HALF_UP).
pub(crate) fn round_double(x: f64, places: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    match round_digits(x, places) {
        Some(unscaled) => format!("{unscaled}e{}", -places).parse().unwrap_or(x),
        None => x,
    }
}

/// A double printed as Java's `Double.toString` does (Flink's CAST to STRING).
pub(crate) fn format_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = x.abs();
    if abs == 0.0 || (1e-3..1e7).contains(&abs) {
        let mut s = format!("{x}");
        if !s.contains('.') {
            s.push_str(".0");
        }
        return s;
    }
    let s = format!("{x:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    if mantissa.contains('.') {
        format!("{mantissa}E{exp}")
    } else {
        format!("{mantissa}.0E{exp}")
    }
}

/// An interval as Flink prints INTERVAL DAY TO SECOND: `+1 02:03:04.005`.
fn format_interval(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let m = ms.unsigned_abs();
    format!(
        "{sign}{} {:02}:{:02}:{:02}.{:03}",
        m / 86_400_000,
        m / 3_600_000 % 24,
        m / 60_000 % 60,
        m / 1000 % 60,
        m % 1000
    )
}

/// The text of a value as CAST(.. AS STRING) produces it; None for NULL.
pub(crate) fn value_to_string(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_double(*f),
        Value::Decimal(d) => d.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Timestamp(ts) => {
            let mut s = String::with_capacity(23);
            format_timestamp(*ts as Timestamp, &mut s);
            s
        }
        Value::Interval(ms) => format_interval(*ms),
    })
}

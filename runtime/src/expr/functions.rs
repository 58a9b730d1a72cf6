//! Built-in scalar functions: their signatures (checked when binding), their evaluation, and
//! the patterns they compile once (regular expressions, LIKE patterns, date formats).

use super::ast::Ast;
use super::compile::{bind_arith, coerce, common_type, comparable, Typed, AGGREGATE_HINT};
use super::eval::{
    compare, div_round_half_up, pow10_i128, rescale_round, round_double, ArithOp, CmpOp, Node, NULL,
};
use super::{suggest, ExprError};
use crate::types::{days_from_civil, DataType, DateTimeParts, Decimal, Timestamp, Value};
use regex::Regex;
use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Range;
use std::sync::Arc;

/// A bound function with whatever it precompiled from literal arguments.
#[derive(Clone, Debug)]
pub(crate) enum Func {
    Abs,
    Floor,
    Ceil,
    /// `places` is the (literal) second argument; `scale` the result scale for DECIMAL input.
    Round {
        places: i32,
        scale: u8,
    },
    Lower,
    Upper,
    CharLength,
    Concat,
    Substring,
    Trim(TrimSide),
    Replace,
    Coalesce,
    NullIf,
    RegexpExtract(Option<Regex>),
    /// The regex and the replacement (translated from Java's `$1` syntax) when literal.
    RegexpReplace(Option<Regex>, Option<String>),
    Regexp(Option<Regex>),
    SplitIndex,
    DateFormat(Option<DatePattern>),
    Extract(TimeField),
    CountChar,
    ToTimestamp(Option<DatePattern>),
    ToTimestampLtz {
        unit_ms: i64,
    },
    /// The start of the unit (ms) a timestamp falls in.
    DateTrunc {
        unit_ms: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrimSide {
    Both,
    Leading,
    Trailing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeField {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    DayOfWeek,
    DayOfYear,
}

/// (name, minimum arity, maximum arity; None = variadic), for arity checks and suggestions.
const FUNCTIONS: &[(&str, usize, Option<usize>)] = &[
    ("mod", 2, Some(2)),
    ("abs", 1, Some(1)),
    ("floor", 1, Some(1)),
    ("ceil", 1, Some(1)),
    ("ceiling", 1, Some(1)),
    ("round", 1, Some(2)),
    ("lower", 1, Some(1)),
    ("upper", 1, Some(1)),
    ("char_length", 1, Some(1)),
    ("character_length", 1, Some(1)),
    ("length", 1, Some(1)),
    ("concat", 1, None),
    ("substring", 2, Some(3)),
    ("substr", 2, Some(3)),
    ("trim", 1, Some(1)),
    ("ltrim", 1, Some(1)),
    ("rtrim", 1, Some(1)),
    ("replace", 3, Some(3)),
    ("coalesce", 1, None),
    ("if", 3, Some(3)),
    ("nullif", 2, Some(2)),
    ("regexp_extract", 2, Some(3)),
    ("regexp_replace", 3, Some(3)),
    ("regexp", 2, Some(2)),
    ("split_index", 3, Some(3)),
    ("date_format", 2, Some(2)),
    ("year", 1, Some(1)),
    ("month", 1, Some(1)),
    ("dayofmonth", 1, Some(1)),
    ("hour", 1, Some(1)),
    ("minute", 1, Some(1)),
    ("second", 1, Some(1)),
    ("dayofweek", 1, Some(1)),
    ("dayofyear", 1, Some(1)),
    ("count_char", 2, Some(2)),
    ("to_timestamp", 1, Some(2)),
    ("to_timestamp_ltz", 2, Some(2)),
    ("date_trunc", 2, Some(2)),
];

fn is_string(t: DataType) -> bool {
    matches!(t, DataType::String | DataType::Null)
}

fn is_int(t: DataType) -> bool {
    matches!(t, DataType::BigInt | DataType::Null)
}

fn is_timestamp(t: DataType) -> bool {
    matches!(t, DataType::Timestamp | DataType::Null)
}

/// A literal argument's value after constant folding, if the argument is constant.
fn literal(t: &Typed) -> Option<&Value> {
    match &t.node {
        Node::Literal(v) => Some(v),
        _ => None,
    }
}

fn compile_regex(pattern: &str, span: Range<usize>) -> Result<Regex, ExprError> {
    super::bounded_regex(pattern).map_err(|e| {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or("").trim().to_string();
        ExprError::new(format!("invalid regular expression: {last}"), span).with_help(
            "patterns follow Java syntax where Rust's regex crate supports it \
             (no look-around, no back-references, at most 32 levels of nesting)",
        )
    })
}

/// Checks that a function exists and gets a valid number of arguments, before they are bound.
pub(crate) fn check_arity(name: &str, count: usize, span: &Range<usize>) -> Result<(), ExprError> {
    let upper = name.to_ascii_uppercase();
    let span = span.clone();
    let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(n, _, _)| *n == name) else {
        let mut known: Vec<&str> = FUNCTIONS.iter().map(|(n, _, _)| *n).collect();
        known.extend(super::ast::AGGREGATE_NAMES);
        let err = ExprError::new(format!("unknown function `{name}`"), span);
        return Err(match suggest(name, known.iter().copied()) {
            Some(s) => err.with_help(format!("did you mean `{}`?", s.to_ascii_uppercase())),
            None => err.with_help(format!(
                "known functions: {}",
                known
                    .iter()
                    .map(|n| n.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        });
    };
    if count < min || max.is_some_and(|m| count > m) {
        let expected = match max {
            Some(m) if m == min => format!("{min} argument{}", if min == 1 { "" } else { "s" }),
            Some(m) if m == min + 1 => format!("{min} or {m} arguments"),
            Some(m) => format!("{min} to {m} arguments"),
            None => format!("at least {min} argument{}", if min == 1 { "" } else { "s" }),
        };
        return Err(ExprError::new(
            format!("function {upper} expects {expected}, found {count}"),
            span,
        ));
    }
    Ok(())
}

/// Types a scalar function call whose arguments are bound (arity already checked): checks
/// argument types, precompiles literal patterns, and returns the typed node.
pub(crate) fn type_call(
    name: &str,
    typed: Vec<Typed>,
    args: &[Ast],
    span: Range<usize>,
) -> Result<Typed, ExprError> {
    let upper = name.to_ascii_uppercase();
    // Checks argument `i` against a type predicate, with a message naming function and position.
    let check = |typed: &[Typed], i: usize, ok: fn(DataType) -> bool, expected: &str| {
        if ok(typed[i].ty) {
            Ok(())
        } else {
            Err(ExprError::new(
                format!(
                    "argument {} of {upper} must be {expected}, found {}",
                    i + 1,
                    typed[i].ty
                ),
                args[i].span.clone(),
            ))
        }
    };
    let call = |func: Func, typed: Vec<Typed>, ty: DataType| Typed {
        node: Node::Call {
            func: Box::new(func),
            args: typed.into_iter().map(|t| t.node).collect(),
        },
        ty,
    };
    let numeric = |t: DataType| t.is_numeric();

    match name {
        "mod" => {
            let mut it = typed.into_iter();
            let (l, r) = (it.next(), it.next());
            match (l, r) {
                (Some(l), Some(r)) => bind_arith(ArithOp::Mod, "MOD", l, r, span),
                _ => Err(ExprError::new("MOD expects 2 arguments", span)),
            }
        }
        "abs" => {
            check(&typed, 0, numeric, "numeric")?;
            let ty = typed[0].ty;
            Ok(call(Func::Abs, typed, ty))
        }
        "floor" | "ceil" | "ceiling" => {
            check(&typed, 0, numeric, "numeric")?;
            let ty = match typed[0].ty {
                DataType::Decimal { precision, .. } => DataType::Decimal {
                    precision,
                    scale: 0,
                },
                other => other,
            };
            let func = if name == "floor" {
                Func::Floor
            } else {
                Func::Ceil
            };
            Ok(call(func, typed, ty))
        }
        "round" => {
            check(&typed, 0, numeric, "numeric")?;
            let places = match typed.get(1) {
                None => 0,
                Some(t) => match literal(t) {
                    Some(Value::Int(p)) if (-38..=38).contains(p) => *p as i32,
                    _ => {
                        return Err(ExprError::new(
                            "the second argument of ROUND must be an integer literal between -38 and 38",
                            args[1].span.clone(),
                        ))
                    }
                },
            };
            let ty = match typed[0].ty {
                DataType::Decimal { precision, scale } => {
                    let (p, s) = (precision as i32, scale as i32);
                    if places >= s {
                        typed[0].ty
                    } else if places < 0 {
                        DataType::Decimal {
                            precision: (1 + p - s).clamp(1, 38) as u8,
                            scale: 0,
                        }
                    } else {
                        DataType::Decimal {
                            precision: (1 + p - s + places).clamp(1, 38) as u8,
                            scale: places as u8,
                        }
                    }
                }
                other => other,
            };
            let scale = match ty {
                DataType::Decimal { scale, .. } => scale,
                _ => 0,
            };
            Ok(call(Func::Round { places, scale }, typed, ty))
        }
        "lower" | "upper" | "trim" | "ltrim" | "rtrim" => {
            check(&typed, 0, is_string, "STRING")?;
            let func = match name {
                "lower" => Func::Lower,
                "upper" => Func::Upper,
                "trim" => Func::Trim(TrimSide::Both),
                "ltrim" => Func::Trim(TrimSide::Leading),
                _ => Func::Trim(TrimSide::Trailing),
            };
            Ok(call(func, typed, DataType::String))
        }
        "char_length" | "character_length" | "length" => {
            check(&typed, 0, is_string, "STRING")?;
            Ok(call(Func::CharLength, typed, DataType::BigInt))
        }
        "concat" => {
            for i in 0..typed.len() {
                check(&typed, i, is_string, "STRING").map_err(|e| {
                    e.with_help("CAST non-string arguments, e.g. CAST(x AS STRING)")
                })?;
            }
            Ok(call(Func::Concat, typed, DataType::String))
        }
        "substring" | "substr" => {
            check(&typed, 0, is_string, "STRING")?;
            check(&typed, 1, is_int, "BIGINT")?;
            if typed.len() > 2 {
                check(&typed, 2, is_int, "BIGINT")?;
            }
            Ok(call(Func::Substring, typed, DataType::String))
        }
        "replace" => {
            for i in 0..3 {
                check(&typed, i, is_string, "STRING")?;
            }
            Ok(call(Func::Replace, typed, DataType::String))
        }
        "coalesce" => {
            let mut ty = DataType::Null;
            for (i, t) in typed.iter().enumerate() {
                ty = common_type(ty, t.ty).ok_or_else(|| {
                    ExprError::new(
                        format!(
                            "argument {} of COALESCE has type {}, which does not match {ty}",
                            i + 1,
                            t.ty
                        ),
                        args[i].span.clone(),
                    )
                })?;
            }
            let typed = typed.into_iter().map(|t| coerce(t, ty)).collect();
            Ok(call(Func::Coalesce, typed, ty))
        }
        "if" => {
            check(
                &typed,
                0,
                |t| matches!(t, DataType::Boolean | DataType::Null),
                "BOOLEAN",
            )?;
            let ty = common_type(typed[1].ty, typed[2].ty).ok_or_else(|| {
                ExprError::new(
                    format!(
                        "the branches of IF have incompatible types {} and {}",
                        typed[1].ty, typed[2].ty
                    ),
                    span.clone(),
                )
            })?;
            let mut it = typed.into_iter();
            let (Some(cond), Some(then), Some(else_)) = (it.next(), it.next(), it.next()) else {
                return Err(ExprError::new("IF expects 3 arguments", span));
            };
            Ok(Typed {
                node: Node::Case {
                    operand: None,
                    branches: vec![(cond.node, coerce(then, ty).node)],
                    else_: Box::new(coerce(else_, ty).node),
                },
                ty,
            })
        }
        "nullif" => {
            if !comparable(typed[0].ty, typed[1].ty) {
                return Err(ExprError::new(
                    format!("NULLIF cannot compare {} with {}", typed[0].ty, typed[1].ty),
                    span,
                ));
            }
            let ty = typed[0].ty;
            Ok(call(Func::NullIf, typed, ty))
        }
        "regexp_extract" | "regexp" => {
            check(&typed, 0, is_string, "STRING")?;
            check(&typed, 1, is_string, "STRING")?;
            let regex = match literal(&typed[1]) {
                Some(Value::Str(p)) => Some(compile_regex(p, args[1].span.clone())?),
                _ => None,
            };
            if name == "regexp" {
                return Ok(call(Func::Regexp(regex), typed, DataType::Boolean));
            }
            if typed.len() > 2 {
                check(&typed, 2, is_int, "BIGINT")?;
                if let (Some(re), Some(Value::Int(g))) = (&regex, literal(&typed[2])) {
                    let groups = re.captures_len() - 1;
                    if *g < 0 || *g as usize > groups {
                        return Err(ExprError::new(
                            format!(
                                "REGEXP_EXTRACT group {g} does not exist: the pattern has {groups} group{}",
                                if groups == 1 { "" } else { "s" }
                            ),
                            args[2].span.clone(),
                        ));
                    }
                }
            }
            Ok(call(Func::RegexpExtract(regex), typed, DataType::String))
        }
        "regexp_replace" => {
            for i in 0..3 {
                check(&typed, i, is_string, "STRING")?;
            }
            let regex = match literal(&typed[1]) {
                Some(Value::Str(p)) => Some(compile_regex(p, args[1].span.clone())?),
                _ => None,
            };
            let replacement = match (&regex, literal(&typed[2])) {
                (Some(re), Some(Value::Str(r))) => Some(
                    java_replacement(r, re.captures_len() - 1)
                        .map_err(|m| ExprError::new(m, args[2].span.clone()))?,
                ),
                _ => None,
            };
            Ok(call(
                Func::RegexpReplace(regex, replacement),
                typed,
                DataType::String,
            ))
        }
        "split_index" => {
            check(&typed, 0, is_string, "STRING")?;
            check(&typed, 1, is_string, "STRING")?;
            check(&typed, 2, is_int, "BIGINT")?;
            Ok(call(Func::SplitIndex, typed, DataType::String))
        }
        "date_format" => {
            check(
                &typed,
                0,
                |t| matches!(t, DataType::Timestamp | DataType::String | DataType::Null),
                "TIMESTAMP or STRING",
            )?;
            check(&typed, 1, is_string, "STRING")?;
            let pattern = match literal(&typed[1]) {
                Some(Value::Str(p)) => Some(
                    DatePattern::compile(p).map_err(|m| ExprError::new(m, args[1].span.clone()))?,
                ),
                _ => None,
            };
            Ok(call(Func::DateFormat(pattern), typed, DataType::String))
        }
        "year" | "month" | "dayofmonth" | "hour" | "minute" | "second" | "dayofweek"
        | "dayofyear" => {
            check(&typed, 0, is_timestamp, "TIMESTAMP")?;
            let field = match name {
                "year" => TimeField::Year,
                "month" => TimeField::Month,
                "dayofmonth" => TimeField::Day,
                "hour" => TimeField::Hour,
                "minute" => TimeField::Minute,
                "second" => TimeField::Second,
                "dayofweek" => TimeField::DayOfWeek,
                _ => TimeField::DayOfYear,
            };
            Ok(call(Func::Extract(field), typed, DataType::BigInt))
        }
        "count_char" => {
            check(&typed, 0, is_string, "STRING")?;
            check(&typed, 1, is_string, "STRING")?;
            if let Some(Value::Str(c)) = literal(&typed[1]) {
                if c.chars().count() != 1 {
                    return Err(ExprError::new(
                        format!("argument 2 of COUNT_CHAR must be a single character, found '{c}'"),
                        args[1].span.clone(),
                    ));
                }
            }
            Ok(call(Func::CountChar, typed, DataType::BigInt))
        }
        "date_trunc" => {
            check(&typed, 0, is_string, "STRING")?;
            check(&typed, 1, is_timestamp, "TIMESTAMP")?;
            let unit = match literal(&typed[0]) {
                Some(Value::Str(u)) => u.to_ascii_lowercase(),
                _ => {
                    return Err(ExprError::new(
                        "the first argument of DATE_TRUNC must be a literal unit",
                        args[0].span.clone(),
                    )
                    .with_help("e.g. DATE_TRUNC('minute', ts)"))
                }
            };
            let unit_ms = match unit.as_str() {
                "second" => 1000,
                "minute" => 60_000,
                "hour" => 3_600_000,
                "day" => 86_400_000,
                other => {
                    return Err(ExprError::new(
                        format!("DATE_TRUNC: unknown unit '{other}'"),
                        args[0].span.clone(),
                    )
                    .with_help("use 'second', 'minute', 'hour' or 'day'"))
                }
            };
            Ok(call(
                Func::DateTrunc { unit_ms },
                typed,
                DataType::Timestamp,
            ))
        }
        "to_timestamp" => {
            check(&typed, 0, is_string, "STRING")?;
            let mut pattern = None;
            if typed.len() > 1 {
                check(&typed, 1, is_string, "STRING")?;
                if let Some(Value::Str(p)) = literal(&typed[1]) {
                    pattern = Some(
                        DatePattern::compile(p)
                            .map_err(|m| ExprError::new(m, args[1].span.clone()))?,
                    );
                }
            }
            Ok(call(Func::ToTimestamp(pattern), typed, DataType::Timestamp))
        }
        "to_timestamp_ltz" => {
            check(&typed, 0, is_int, "BIGINT")?;
            let unit_ms = match literal(&typed[1]) {
                Some(Value::Int(0)) => 1000,
                Some(Value::Int(3)) => 1,
                _ => {
                    return Err(ExprError::new(
                        "the second argument of TO_TIMESTAMP_LTZ must be 0 (seconds) or 3 (milliseconds)",
                        args[1].span.clone(),
                    ))
                }
            };
            Ok(call(
                Func::ToTimestampLtz { unit_ms },
                typed,
                DataType::Timestamp,
            ))
        }
        _ => {
            Err(ExprError::new(format!("unknown function `{name}`"), span)
                .with_help(AGGREGATE_HINT))
        }
    }
}

/// Argument `i`, borrowed where possible; a missing argument reads as NULL.
#[inline]
fn arg<'a>(args: &'a [Node], row: &'a [Value], i: usize) -> Cow<'a, Value> {
    match args.get(i) {
        Some(n) => n.eval_ref(row),
        None => Cow::Borrowed(&NULL),
    }
}

/// Wraps a computed string; returns the input value itself when unchanged, saving an allocation.
fn string_result(original: &Value, result: &str) -> Value {
    match original {
        Value::Str(s) if **s == *result => original.clone(),
        _ => Value::str(result),
    }
}

fn substring(s: &str, pos: i64, len: Option<i64>) -> Option<&str> {
    if len.is_some_and(|l| l < 0) {
        return None;
    }
    let ascii = s.is_ascii();
    let num_chars = if ascii { s.len() } else { s.chars().count() } as i64;
    let start = if pos > 0 {
        pos - 1
    } else if pos < 0 {
        num_chars + pos
    } else {
        0
    };
    if start >= num_chars || start < 0 {
        return Some("");
    }
    let end = match len {
        Some(l) if num_chars - start >= l => start + l,
        _ => num_chars,
    };
    if ascii {
        return s.get(start as usize..end as usize);
    }
    let byte_at = |n: i64| s.char_indices().nth(n as usize).map_or(s.len(), |(b, _)| b);
    s.get(byte_at(start)..byte_at(end))
}

fn time_field(ts: Timestamp, field: TimeField) -> i64 {
    // Time-of-day fields need no calendar arithmetic.
    let ms_of_day = ts.rem_euclid(86_400_000);
    match field {
        TimeField::Hour => return ms_of_day / 3_600_000,
        TimeField::Minute => return ms_of_day / 60_000 % 60,
        TimeField::Second => return ms_of_day / 1000 % 60,
        _ => {}
    }
    let p = DateTimeParts::of(ts);
    match field {
        TimeField::Year => p.year,
        TimeField::Month => p.month as i64,
        TimeField::Day => p.day as i64,
        TimeField::Hour => p.hour as i64,
        TimeField::Minute => p.minute as i64,
        TimeField::Second => p.second as i64,
        // SQL numbering: 1 = Sunday ... 7 = Saturday; 1970-01-01 was a Thursday.
        TimeField::DayOfWeek => (ts.div_euclid(86_400_000) + 4).rem_euclid(7) + 1,
        TimeField::DayOfYear => ts.div_euclid(86_400_000) - days_from_civil(p.year, 1, 1) + 1,
    }
}

fn dynamic_regex(pattern: &Value) -> Option<Regex> {
    super::bounded_regex(pattern.as_str()?).ok()
}

impl Func {
    pub(crate) fn eval(&self, args: &[Node], row: &[Value]) -> Value {
        let a0 = arg(args, row, 0);
        match self {
            Func::Abs => match &*a0 {
                Value::Int(x) => Value::Int(x.wrapping_abs()),
                Value::Float(f) => Value::Float(f.abs()),
                Value::Decimal(d) => d.unscaled.checked_abs().map_or(Value::Null, |u| {
                    Value::Decimal(Decimal {
                        unscaled: u,
                        scale: d.scale,
                    })
                }),
                _ => Value::Null,
            },
            Func::Floor | Func::Ceil => match &*a0 {
                Value::Int(x) => Value::Int(*x),
                Value::Float(f) => Value::Float(if matches!(self, Func::Floor) {
                    f.floor()
                } else {
                    f.ceil()
                }),
                Value::Decimal(d) => {
                    let Some(p) = pow10_i128(d.scale as u32) else {
                        return Value::Null;
                    };
                    let u = d.unscaled as i128;
                    let v = if matches!(self, Func::Floor) {
                        u.div_euclid(p)
                    } else {
                        -((-u).div_euclid(p))
                    };
                    i64::try_from(v).map_or(Value::Null, |v| {
                        Value::Decimal(Decimal {
                            unscaled: v,
                            scale: 0,
                        })
                    })
                }
                _ => Value::Null,
            },
            Func::Round { places, scale } => round(&a0, *places, *scale),
            Func::Lower => match &*a0 {
                Value::Str(s) if !s.chars().any(char::is_uppercase) => a0.into_owned(),
                Value::Str(s) => Value::str(&s.to_lowercase()),
                _ => Value::Null,
            },
            Func::Upper => match &*a0 {
                Value::Str(s) if !s.chars().any(char::is_lowercase) => a0.into_owned(),
                Value::Str(s) => Value::str(&s.to_uppercase()),
                _ => Value::Null,
            },
            Func::CharLength => match &*a0 {
                Value::Str(s) => Value::Int(if s.is_ascii() {
                    s.len()
                } else {
                    s.chars().count()
                } as i64),
                _ => Value::Null,
            },
            Func::Concat => {
                let mut out = String::new();
                for i in 0..args.len() {
                    match &*arg(args, row, i) {
                        Value::Str(s) => out.push_str(s),
                        _ => return Value::Null,
                    }
                }
                Value::Str(Arc::from(out))
            }
            Func::Substring => {
                let (Some(s), Some(pos)) = (a0.as_str(), arg(args, row, 1).as_int()) else {
                    return Value::Null;
                };
                let len = if args.len() > 2 {
                    match arg(args, row, 2).as_int() {
                        Some(l) => Some(l),
                        None => return Value::Null,
                    }
                } else {
                    None
                };
                substring(s, pos, len).map_or(Value::Null, |r| string_result(&a0, r))
            }
            Func::Trim(side) => match a0.as_str() {
                Some(s) => string_result(
                    &a0,
                    match side {
                        TrimSide::Both => s.trim_matches(' '),
                        TrimSide::Leading => s.trim_start_matches(' '),
                        TrimSide::Trailing => s.trim_end_matches(' '),
                    },
                ),
                None => Value::Null,
            },
            Func::Replace => {
                let (from, to) = (arg(args, row, 1), arg(args, row, 2));
                match (a0.as_str(), from.as_str(), to.as_str()) {
                    (Some(s), Some(f), Some(_)) if !f.is_empty() && !s.contains(f) => {
                        a0.into_owned()
                    }
                    (Some(s), Some(f), Some(t)) => Value::str(&s.replace(f, t)),
                    _ => Value::Null,
                }
            }
            Func::Coalesce => {
                for n in args {
                    let v = n.eval(row);
                    if !v.is_null() {
                        return v;
                    }
                }
                Value::Null
            }
            Func::NullIf => {
                if compare(CmpOp::Eq, &a0, &arg(args, row, 1)) == Some(true) {
                    Value::Null
                } else {
                    a0.into_owned()
                }
            }
            Func::RegexpExtract(regex) => {
                let Some(s) = a0.as_str() else {
                    return Value::Null;
                };
                let dynamic;
                let re = match regex {
                    Some(re) => re,
                    None => match dynamic_regex(&arg(args, row, 1)) {
                        Some(re) => {
                            dynamic = re;
                            &dynamic
                        }
                        None => return Value::Null,
                    },
                };
                let group = if args.len() > 2 {
                    match arg(args, row, 2).as_int() {
                        Some(g) if g >= 0 => g as usize,
                        _ => return Value::Null,
                    }
                } else {
                    1
                };
                let found = if group == 0 {
                    re.find(s).map(|m| m.as_str())
                } else {
                    re.captures(s)
                        .and_then(|c| c.get(group))
                        .map(|m| m.as_str())
                };
                found.map_or(Value::Null, |m| string_result(&a0, m))
            }
            Func::RegexpReplace(regex, replacement) => {
                let Some(s) = a0.as_str() else {
                    return Value::Null;
                };
                let dynamic;
                let re = match regex {
                    Some(re) => re,
                    None => match dynamic_regex(&arg(args, row, 1)) {
                        Some(re) => {
                            dynamic = re;
                            &dynamic
                        }
                        None => return Value::Null,
                    },
                };
                let translated;
                let rep = match replacement {
                    Some(r) => r.as_str(),
                    None => {
                        let r = arg(args, row, 2);
                        match r
                            .as_str()
                            .and_then(|r| java_replacement(r, re.captures_len() - 1).ok())
                        {
                            Some(t) => {
                                translated = t;
                                translated.as_str()
                            }
                            None => return Value::Null,
                        }
                    }
                };
                match re.replace_all(s, rep) {
                    Cow::Borrowed(_) => a0.into_owned(),
                    Cow::Owned(r) => Value::Str(Arc::from(r)),
                }
            }
            Func::Regexp(regex) => {
                let Some(s) = a0.as_str() else {
                    return Value::Null;
                };
                match regex {
                    Some(re) => Value::Bool(re.is_match(s)),
                    None => dynamic_regex(&arg(args, row, 1))
                        .map_or(Value::Null, |re| Value::Bool(re.is_match(s))),
                }
            }
            Func::SplitIndex => {
                let (delim, index) = (arg(args, row, 1), arg(args, row, 2));
                let (Some(s), Some(d), Some(i)) = (a0.as_str(), delim.as_str(), index.as_int())
                else {
                    return Value::Null;
                };
                if i < 0 || s.is_empty() {
                    return Value::Null;
                }
                let part = if d.is_empty() {
                    s.split(char::is_whitespace).nth(i as usize)
                } else {
                    match d.as_bytes() {
                        // A one-byte delimiter splits with a byte scan, not a substring searcher.
                        [b] if b.is_ascii() => s.split(char::from(*b)).nth(i as usize),
                        _ => s.split(d).nth(i as usize),
                    }
                };
                part.map_or(Value::Null, |p| string_result(&a0, p))
            }
            Func::DateFormat(pattern) => {
                let ts = match &*a0 {
                    Value::Timestamp(t) => *t,
                    Value::Str(s) => match crate::types::parse_timestamp(s.trim()) {
                        Some(t) => t,
                        None => return Value::Null,
                    },
                    _ => return Value::Null,
                };
                let dynamic;
                let pattern = match pattern {
                    Some(p) => p,
                    None => match arg(args, row, 1)
                        .as_str()
                        .and_then(|p| DatePattern::compile(p).ok())
                    {
                        Some(p) => {
                            dynamic = p;
                            &dynamic
                        }
                        None => return Value::Null,
                    },
                };
                let mut out = String::with_capacity(32);
                pattern.format(ts, &mut out);
                Value::Str(Arc::from(out))
            }
            Func::Extract(field) => match &*a0 {
                Value::Timestamp(t) => Value::Int(time_field(*t, *field)),
                _ => Value::Null,
            },
            Func::CountChar => {
                // Nexmark's COUNT_CHAR UDF counts 0 for a NULL string.
                let c = arg(args, row, 1);
                let Some(c) = c.as_str().and_then(|c| c.chars().next()) else {
                    return Value::Null;
                };
                let count = match a0.as_str() {
                    None => 0,
                    Some(s) if c.is_ascii() => {
                        let b = c as u8;
                        s.bytes().filter(|x| *x == b).count()
                    }
                    Some(s) => s.chars().filter(|x| *x == c).count(),
                };
                Value::Int(count as i64)
            }
            Func::ToTimestamp(pattern) => {
                let Some(s) = a0.as_str() else {
                    return Value::Null;
                };
                let parsed = if args.len() > 1 {
                    match pattern {
                        Some(p) => p.parse(s),
                        None => arg(args, row, 1)
                            .as_str()
                            .and_then(|p| DatePattern::compile(p).ok())
                            .and_then(|p| p.parse(s)),
                    }
                } else {
                    crate::types::parse_timestamp(s.trim())
                };
                parsed.map_or(Value::Null, Value::Timestamp)
            }
            Func::DateTrunc { unit_ms } => match arg(args, row, 1).as_timestamp() {
                Some(t) => Value::Timestamp(t - t.rem_euclid(*unit_ms)),
                None => Value::Null,
            },
            Func::ToTimestampLtz { unit_ms } => match &*a0 {
                Value::Int(n) => n
                    .checked_mul(*unit_ms)
                    .map_or(Value::Null, Value::Timestamp),
                _ => Value::Null,
            },
        }
    }
}

/// ROUND(x, places) with HALF_UP, as Flink does for every numeric type.
fn round(v: &Value, places: i32, scale: u8) -> Value {
    match v {
        Value::Int(x) if places >= 0 => Value::Int(*x),
        Value::Int(x) => {
            let Some(m) = pow10_i128((-places) as u32) else {
                return Value::Null;
            };
            let r = div_round_half_up(*x as i128, m) * m;
            i64::try_from(r).map_or(Value::Null, Value::Int)
        }
        Value::Float(f) => Value::Float(round_double(*f, places)),
        Value::Decimal(d) => {
            let rounded = if places >= d.scale as i32 {
                Some(*d)
            } else {
                // Round to units of 10^-places, then express at scale max(places, 0).
                pow10_i128((d.scale as i32 - places) as u32).and_then(|m| {
                    let q = div_round_half_up(d.unscaled as i128, m);
                    let (unscaled, s) = if places >= 0 {
                        (Some(q), places as u8)
                    } else {
                        (
                            pow10_i128((-places) as u32).and_then(|p| q.checked_mul(p)),
                            0,
                        )
                    };
                    Some(Decimal {
                        unscaled: i64::try_from(unscaled?).ok()?,
                        scale: s,
                    })
                })
            };
            rounded
                .and_then(|r| rescale_round(r, scale))
                .map_or(Value::Null, Value::Decimal)
        }
        _ => Value::Null,
    }
}

/// Translates a Java replacement string (`$1`, `${name}`, `\$`) into the `regex` crate's syntax,
/// with Java's rule that `$12` means group 12 only if the pattern has that many groups.
fn java_replacement(rep: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(rep.len() + 4);
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(n) => out.push(n),
                None => return Err("the replacement ends with a lone `\\`".to_string()),
            },
            '$' => {
                if chars.peek() == Some(&'{') {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) if ch.is_ascii_alphanumeric() => name.push(ch),
                            _ => {
                                return Err(
                                    "invalid group name reference in the replacement".to_string()
                                )
                            }
                        }
                    }
                    let _ = write!(out, "${{{name}}}");
                    continue;
                }
                let Some(first) = chars.peek().and_then(|d| d.to_digit(10)) else {
                    return Err(
                        "`$` in the replacement must be followed by a group number; \
                                write `\\$` for a literal dollar"
                            .to_string(),
                    );
                };
                chars.next();
                let mut group = first as usize;
                if group > groups {
                    return Err(format!(
                        "the replacement refers to group {group}, but the pattern has {groups}"
                    ));
                }
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    let next = group * 10 + d as usize;
                    if next > groups {
                        break;
                    }
                    group = next;
                    chars.next();
                }
                let _ = write!(out, "${{{group}}}");
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

// ---- LIKE -----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LikeTok {
    Lit(char),
    One,
    Many,
}

/// A compiled LIKE pattern; the common shapes (`abc`, `abc%`, `%abc`, `%abc%`) become plain
/// string tests.
#[derive(Clone, Debug)]
pub(crate) enum LikeMatcher {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    General(Vec<LikeTok>),
}

impl LikeMatcher {
    pub(crate) fn compile(pattern: &str, escape: Option<char>) -> Result<LikeMatcher, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some(n) if n == '%' || n == '_' || Some(n) == escape => {
                        toks.push(LikeTok::Lit(n))
                    }
                    _ => {
                        return Err(format!(
                            "invalid escape sequence in LIKE pattern '{pattern}': the escape \
                             character must be followed by `%`, `_` or itself"
                        ))
                    }
                }
            } else if c == '%' {
                if toks.last() != Some(&LikeTok::Many) {
                    toks.push(LikeTok::Many);
                }
            } else if c == '_' {
                toks.push(LikeTok::One);
            } else {
                toks.push(LikeTok::Lit(c));
            }
        }
        if toks.contains(&LikeTok::One) {
            return Ok(LikeMatcher::General(toks));
        }
        let starts = toks.first() == Some(&LikeTok::Many);
        let ends = toks.len() > usize::from(starts) && toks.last() == Some(&LikeTok::Many);
        let inner = &toks[usize::from(starts)..toks.len() - usize::from(ends)];
        if inner.contains(&LikeTok::Many) {
            return Ok(LikeMatcher::General(toks));
        }
        let lit: String = inner
            .iter()
            .filter_map(|t| match t {
                LikeTok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        let lit = lit.into_boxed_str();
        Ok(match (starts, ends) {
            (false, false) => LikeMatcher::Exact(lit),
            (false, true) => LikeMatcher::Prefix(lit),
            (true, false) => LikeMatcher::Suffix(lit),
            (true, true) => LikeMatcher::Contains(lit),
        })
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            LikeMatcher::Exact(p) => s == &**p,
            LikeMatcher::Prefix(p) => s.starts_with(&**p),
            LikeMatcher::Suffix(p) => s.ends_with(&**p),
            LikeMatcher::Contains(p) => contains(s, p),
            LikeMatcher::General(toks) => like_general(toks, s),
        }
    }
}

/// Substring test. `str::contains` builds a Two-Way searcher per call, which costs more than
/// the search itself on the short strings records carry, so short haystacks use a plain scan.
fn contains(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    if h.len() > 256 {
        return haystack.contains(needle);
    }
    let last_start = match h.len().checked_sub(n.len()) {
        Some(l) => l,
        None => return false,
    };
    (0..=last_start).any(|i| h[i] == first && &h[i + 1..i + n.len()] == rest)
}

/// Appends `v` zero-padded to `width` digits, without going through `fmt`.
fn push_padded(out: &mut String, v: i64, width: usize) {
    if v < 0 {
        out.push('-');
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push('0');
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// Wildcard matching with backtracking to the last `%` only, which is linear for patterns
/// without `%` and O(n·m) in the worst case.
fn like_general(toks: &[LikeTok], s: &str) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    let char_len = |i: usize| s[i..].chars().next().map_or(1, char::len_utf8);
    while i < s.len() {
        match toks.get(p) {
            Some(LikeTok::Lit(c)) if s[i..].starts_with(*c) => {
                p += 1;
                i += c.len_utf8();
                continue;
            }
            Some(LikeTok::One) => {
                p += 1;
                i += char_len(i);
                continue;
            }
            Some(LikeTok::Many) => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, si)) => {
                let next = si + char_len(si);
                star = Some((sp, next));
                p = sp + 1;
                i = next;
            }
            None => return false,
        }
    }
    toks[p.min(toks.len())..]
        .iter()
        .all(|t| *t == LikeTok::Many)
}

// ---- date patterns --------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum DateItem {
    Text(String),
    Field(char, usize),
}

/// A compiled Java `DateTimeFormatter`-style pattern (`yyyy-MM-dd HH:mm:ss.SSS`), in UTC.
#[derive(Clone, Debug)]
pub(crate) struct DatePattern {
    items: Vec<DateItem>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const PATTERN_LETTERS: &str = "yuMLdDHhkKmsSaEZXx";

impl DatePattern {
    pub(crate) fn compile(pattern: &str) -> Result<DatePattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut items: Vec<DateItem> = Vec::new();
        let push_text = |items: &mut Vec<DateItem>, t: &str| {
            if let Some(DateItem::Text(prev)) = items.last_mut() {
                prev.push_str(t);
            } else {
                items.push(DateItem::Text(t.to_string()));
            }
        };
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    push_text(&mut items, "'");
                    i += 2;
                    continue;
                }
                let mut lit = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(format!("unterminated quote in date pattern '{pattern}'"))
                        }
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            lit.push('\'');
                            j += 2;
                        }
                        Some('\'') => {
                            j += 1;
                            break;
                        }
                        Some(ch) => {
                            lit.push(*ch);
                            j += 1;
                        }
                    }
                }
                push_text(&mut items, &lit);
                i = j;
            } else if c.is_ascii_alphabetic() {
                let mut j = i;
                while j < chars.len() && chars[j] == c {
                    j += 1;
                }
                if !PATTERN_LETTERS.contains(c) {
                    return Err(format!(
                        "unsupported letter `{c}` in date pattern '{pattern}' \
                         (quote literal text, e.g. 'T')"
                    ));
                }
                items.push(DateItem::Field(c, j - i));
                i = j;
            } else if "[]{}#".contains(c) {
                return Err(format!(
                    "`{c}` is reserved in date pattern '{pattern}'; quote it"
                ));
            } else {
                push_text(&mut items, c.encode_utf8(&mut [0; 4]));
                i += 1;
            }
        }
        Ok(DatePattern { items })
    }

    pub(crate) fn format(&self, ts: Timestamp, out: &mut String) {
        let p = DateTimeParts::of(ts);
        let days = ts.div_euclid(86_400_000);
        for item in &self.items {
            let (c, n) = match item {
                DateItem::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                DateItem::Field(c, n) => (*c, *n),
            };
            let num = |out: &mut String, v: i64| push_padded(out, v, n);
            match c {
                'y' | 'u' if n == 2 => num(out, p.year.rem_euclid(100)),
                'y' | 'u' => num(out, p.year),
                'M' | 'L' => match n {
                    1 | 2 => num(out, p.month as i64),
                    3 => out.push_str(&MONTHS[p.month as usize - 1][..3]),
                    4 => out.push_str(MONTHS[p.month as usize - 1]),
                    _ => out.push_str(&MONTHS[p.month as usize - 1][..1]),
                },
                'd' => num(out, p.day as i64),
                'D' => num(out, days - days_from_civil(p.year, 1, 1) + 1),
                'H' => num(out, p.hour as i64),
                'k' => num(out, if p.hour == 0 { 24 } else { p.hour as i64 }),
                'K' => num(out, (p.hour % 12) as i64),
                'h' => num(
                    out,
                    match p.hour % 12 {
                        0 => 12,
                        h => h as i64,
                    },
                ),
                'm' => num(out, p.minute as i64),
                's' => num(out, p.second as i64),
                'S' => {
                    let digits = [p.millis / 100, p.millis / 10 % 10, p.millis % 10];
                    for i in 0..n {
                        let d = digits.get(i).copied().unwrap_or(0);
                        out.push(char::from(b'0' + d as u8));
                    }
                }
                'a' => out.push_str(if p.hour < 12 { "AM" } else { "PM" }),
                'E' => {
                    let day = DAYS[(days + 3).rem_euclid(7) as usize];
                    match n {
                        1..=3 => out.push_str(&day[..3]),
                        4 => out.push_str(day),
                        _ => out.push_str(&day[..1]),
                    }
                }
                'Z' => out.push_str(match n {
                    1..=3 => "+0000",
                    4 => "GMT",
                    _ => "Z",
                }),
                'X' => out.push('Z'),
                _ => out.push_str(match n {
                    1 => "+00",
                    2 => "+0000",
                    _ => "+00:00",
                }),
            }
        }
    }

    /// Parses text that matches the pattern exactly; None when it does not.
    pub(crate) fn parse(&self, text: &str) -> Option<Timestamp> {
        let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
        let (mut hour, mut minute, mut second, mut millis) = (0u32, 0u32, 0u32, 0u32);
        let mut hour12: Option<u32> = None;
        let mut pm: Option<bool> = None;
        let mut day_of_year: Option<i64> = None;
        let mut offset_ms = 0i64;
        let mut rest = text;
        for (idx, item) in self.items.iter().enumerate() {
            let (c, n) = match item {
                DateItem::Text(t) => {
                    rest = rest.strip_prefix(t.as_str())?;
                    continue;
                }
                DateItem::Field(c, n) => (*c, *n),
            };
            let next_is_number = matches!(
                self.items.get(idx + 1),
                Some(DateItem::Field(c2, _)) if "yuMLdDHhkKmsS".contains(*c2)
            );
            let text_month = matches!(c, 'M' | 'L') && n >= 3;
            if "yuMLdDHhkKmsS".contains(c) && !text_month {
                let (min, max) = match c {
                    'y' | 'u' if n == 2 => (2, 2),
                    'y' | 'u' if next_is_number => (n, n.max(4)),
                    'y' | 'u' => (n, 9),
                    'S' => (n, n),
                    'D' if n == 1 => (1, 3),
                    _ if n == 1 => (1, 2),
                    _ => (n, n),
                };
                let digits = rest
                    .bytes()
                    .take(max)
                    .take_while(u8::is_ascii_digit)
                    .count();
                if digits < min {
                    return None;
                }
                let v: i64 = rest[..digits].parse().ok()?;
                rest = &rest[digits..];
                match c {
                    'y' | 'u' if n == 2 => year = 2000 + v,
                    'y' | 'u' => year = v,
                    'M' | 'L' => month = v as u32,
                    'd' => day = v as u32,
                    'D' => day_of_year = Some(v),
                    'H' => hour = v as u32,
                    'k' => hour = (v % 24) as u32,
                    'h' | 'K' => hour12 = Some(v as u32),
                    'm' => minute = v as u32,
                    's' => second = v as u32,
                    _ => {
                        // Fraction of a second: the first three digits are the milliseconds.
                        let digits_str = &format!("{v:0n$}");
                        let ms = &digits_str[..n.min(3)];
                        millis = ms.parse::<u32>().ok()? * 10u32.pow(3 - n.min(3) as u32);
                    }
                }
                continue;
            }
            match c {
                'M' | 'L' => {
                    let (m, len) = MONTHS.iter().enumerate().find_map(|(i, name)| {
                        let candidates = if n == 3 { &name[..3] } else { name };
                        prefix_ci(rest, candidates).then_some((i as u32 + 1, candidates.len()))
                    })?;
                    month = m;
                    rest = &rest[len..];
                }
                'a' => {
                    if prefix_ci(rest, "AM") {
                        pm = Some(false);
                    } else if prefix_ci(rest, "PM") {
                        pm = Some(true);
                    } else {
                        return None;
                    }
                    rest = &rest[2..];
                }
                'E' => {
                    let len = DAYS.iter().find_map(|d| {
                        if prefix_ci(rest, d) {
                            Some(d.len())
                        } else if prefix_ci(rest, &d[..3]) {
                            Some(3)
                        } else {
                            None
                        }
                    })?;
                    rest = &rest[len..];
                }
                _ => {
                    // Zone offsets: `Z`, `GMT`, `+HH`, `+HHMM`, `+HH:MM`.
                    if let Some(r) = rest.strip_prefix('Z').or_else(|| rest.strip_prefix("GMT")) {
                        rest = r;
                        continue;
                    }
                    let sign = match rest.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return None,
                    };
                    let b = rest.as_bytes();
                    let two = |i: usize| -> Option<i64> {
                        let s = b.get(i..i + 2)?;
                        s.iter()
                            .all(u8::is_ascii_digit)
                            .then(|| ((s[0] - b'0') * 10 + (s[1] - b'0')) as i64)
                    };
                    let hh = two(1)?;
                    let mut used = 3;
                    let mut mm = 0;
                    if b.get(3) == Some(&b':') {
                        mm = two(4)?;
                        used = 6;
                    } else if let Some(m) = two(3) {
                        mm = m;
                        used = 5;
                    }
                    offset_ms = sign * (hh * 3_600_000 + mm * 60_000);
                    rest = &rest[used..];
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        if let Some(h) = hour12 {
            if h > 12 {
                return None;
            }
            hour = h % 12 + if pm == Some(true) { 12 } else { 0 };
        } else if pm == Some(true) && hour < 12 {
            hour += 12;
        }
        let days = match day_of_year {
            Some(doy) => {
                let first = days_from_civil(year, 1, 1);
                let next = days_from_civil(year + 1, 1, 1);
                if doy < 1 || first + doy > next {
                    return None;
                }
                first + doy - 1
            }
            None => {
                if !(1..=12).contains(&month) || day < 1 {
                    return None;
                }
                let (ny, nm) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let month_days = days_from_civil(ny, nm, 1) - days_from_civil(year, month, 1);
                if day as i64 > month_days {
                    return None;
                }
                days_from_civil(year, month, day)
            }
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let time_of_day =
            hour as i64 * 3_600_000 + minute as i64 * 60_000 + second as i64 * 1000 + millis as i64;
        days.checked_mul(86_400_000)?
            .checked_add(time_of_day)?
            .checked_sub(offset_ms)
    }
}

fn prefix_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

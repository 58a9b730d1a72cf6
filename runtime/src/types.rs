//! The value model shared by every part of Eddy: SQL-like data types, values, rows and schemas.
//!
//! Rows are vectors of [`Value`]s described by a [`Schema`]; the schema is known when a job graph is
//! compiled, so operators address columns by index and never look names up per record.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, UTC. Event time, watermarks and TIMESTAMP(3) values use it.
pub type Timestamp = i64;

/// The largest timestamp: the watermark that closes every window at the end of bounded input.
pub const MAX_TIMESTAMP: Timestamp = i64::MAX;
/// The watermark before any event was seen.
pub const MIN_TIMESTAMP: Timestamp = i64::MIN;

/// A column type. Mirrors the Flink SQL types that Nexmark and typical analytics jobs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// The type of the literal NULL before it meets another type.
    Null,
    Boolean,
    /// BIGINT (INT, SMALLINT and TINYINT are widened to it).
    BigInt,
    /// DOUBLE (FLOAT is widened to it).
    Double,
    /// DECIMAL(precision, scale), stored as a scaled i64 (precision up to 18 digits at run time).
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// VARCHAR / STRING.
    String,
    /// TIMESTAMP(3), milliseconds, UTC.
    Timestamp,
    /// A day-time interval in milliseconds (`INTERVAL '4' SECOND`).
    Interval,
}

impl DataType {
    /// True for the types arithmetic works on.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            DataType::BigInt | DataType::Double | DataType::Decimal { .. } | DataType::Null
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Null => write!(f, "NULL"),
            DataType::Boolean => write!(f, "BOOLEAN"),
            DataType::BigInt => write!(f, "BIGINT"),
            DataType::Double => write!(f, "DOUBLE"),
            DataType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            DataType::String => write!(f, "STRING"),
            DataType::Timestamp => write!(f, "TIMESTAMP(3)"),
            DataType::Interval => write!(f, "INTERVAL"),
        }
    }
}

/// A fixed-point decimal: `unscaled / 10^scale`. Arithmetic is exact and checked; overflow gives NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decimal {
    pub unscaled: i64,
    pub scale: u8,
}

/// Powers of ten that fit an i64, for rescaling decimals.
pub const POW10: [i64; 19] = {
    let mut table = [1i64; 19];
    let mut i = 1;
    while i < 19 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

impl Decimal {
    /// This decimal at another scale; None when it overflows. Scaling down truncates toward zero.
    pub fn rescale(self, scale: u8) -> Option<Decimal> {
        let unscaled = match scale.cmp(&self.scale) {
            Ordering::Equal => self.unscaled,
            Ordering::Greater => self
                .unscaled
                .checked_mul(*POW10.get((scale - self.scale) as usize)?)?,
            Ordering::Less => self.unscaled / *POW10.get((self.scale - scale) as usize)?,
        };
        Some(Decimal { unscaled, scale })
    }

    /// The nearest double.
    pub fn to_f64(self) -> f64 {
        self.unscaled as f64 / POW10[self.scale as usize] as f64
    }

    /// Parses `-12.345` style text; the scale is the number of fraction digits.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (int_part, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if frac.len() > 18 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let negative = int_part.starts_with('-');
        let digits = int_part.trim_start_matches(['-', '+']);
        if !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.is_empty() && frac.is_empty()) {
            return None;
        }
        let int_value: i64 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let frac_value: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scale = frac.len() as u8;
        let magnitude = int_value
            .checked_mul(POW10[scale as usize])?
            .checked_add(frac_value)?;
        Some(Decimal {
            unscaled: if negative { -magnitude } else { magnitude },
            scale,
        })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.unscaled);
        }
        let pow = POW10[self.scale as usize] as u64;
        let magnitude = self.unscaled.unsigned_abs();
        let sign = if self.unscaled < 0 { "-" } else { "" };
        write!(
            f,
            "{sign}{}.{:0width$}",
            magnitude / pow,
            magnitude % pow,
            width = self.scale as usize
        )
    }
}

/// One value of a row. Strings are shared (`Arc<str>`) so that copying rows into state or join
/// output does not copy text.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(Decimal),
    Str(Arc<str>),
    /// TIMESTAMP(3): milliseconds since the epoch, UTC.
    Timestamp(Timestamp),
    /// Day-time interval in milliseconds.
    Interval(i64),
}

impl Value {
    /// A string value.
    pub fn str(text: &str) -> Value {
        Value::Str(Arc::from(text))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer inside, if this is a BIGINT.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The milliseconds inside a TIMESTAMP (or BIGINT used as time).
    pub fn as_timestamp(&self) -> Option<Timestamp> {
        match self {
            Value::Timestamp(v) | Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a double, for numeric values.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            Value::Decimal(d) => Some(d.to_f64()),
            _ => None,
        }
    }
}

/// Equality as GROUP BY and join keys need it: NULL equals NULL, doubles compare by bits,
/// decimals by value.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Decimal(a), Value::Decimal(b)) => compare_decimals(*a, *b) == Ordering::Equal,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (Value::Interval(a), Value::Interval(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(v) | Value::Timestamp(v) | Value::Interval(v) => v.hash(state),
            Value::Float(v) => v.to_bits().hash(state),
            Value::Decimal(d) => {
                // Normalise trailing zeros so that equal decimals hash equally.
                let mut d = *d;
                while d.scale > 0 && d.unscaled % 10 == 0 {
                    d.unscaled /= 10;
                    d.scale -= 1;
                }
                d.hash(state)
            }
            Value::Str(s) => s.hash(state),
        }
    }
}

fn compare_decimals(a: Decimal, b: Decimal) -> Ordering {
    if a.scale == b.scale {
        return a.unscaled.cmp(&b.unscaled);
    }
    let scale = a.scale.max(b.scale);
    match (a.rescale(scale), b.rescale(scale)) {
        (Some(x), Some(y)) => x.unscaled.cmp(&y.unscaled),
        _ => a.to_f64().total_cmp(&b.to_f64()),
    }
}

/// Compares two non-null values of comparable types (numbers with numbers, strings with strings,
/// ...). Returns None for incomparable values or when either is NULL, as SQL comparisons do.
pub fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    Some(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Interval(x), Value::Interval(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Decimal(x), Value::Decimal(y)) => compare_decimals(*x, *y),
        (Value::Decimal(x), Value::Int(y)) => compare_decimals(
            *x,
            Decimal {
                unscaled: *y,
                scale: 0,
            },
        ),
        (Value::Int(x), Value::Decimal(y)) => compare_decimals(
            Decimal {
                unscaled: *x,
                scale: 0,
            },
            *y,
        ),
        (Value::Null, _) | (_, Value::Null) => return None,
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?)?,
    })
}

/// A total order for sorting (ORDER BY, top-N): NULL sorts first, then values by `compare_values`.
pub fn sort_order(a: &Value, b: &Value) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => compare_values(a, b).unwrap_or(Ordering::Equal),
    }
}

/// Whether a row adds to or retracts from the result, as in Flink's changelog (RowKind).
/// Append-only streams carry only `Insert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RowKind {
    #[default]
    Insert,
    UpdateBefore,
    UpdateAfter,
    Delete,
}

impl RowKind {
    /// True for the kinds that add a row to the result (+I, +U).
    pub fn is_addition(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }
}

/// One record: its values and its changelog kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub kind: RowKind,
    pub values: Vec<Value>,
}

impl Row {
    /// An insertion (the only kind an append-only stream has).
    pub fn insert(values: Vec<Value>) -> Row {
        Row {
            kind: RowKind::Insert,
            values,
        }
    }

    pub fn with_kind(kind: RowKind, values: Vec<Value>) -> Row {
        Row { kind, values }
    }
}

/// A named, typed column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub data_type: DataType,
}

impl Field {
    pub fn new(name: impl Into<String>, data_type: DataType) -> Field {
        Field {
            name: name.into(),
            data_type,
        }
    }
}

/// The columns of a stream, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<Field>,
}

/// Schemas are shared between the graph, operators and sinks.
pub type SchemaRef = Arc<Schema>;

impl Schema {
    pub fn new(fields: Vec<Field>) -> Schema {
        Schema { fields }
    }

    /// The index of the column with this exact name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Column names joined by ", ", for error messages.
    pub fn names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---- time: UTC calendar arithmetic without a date library --------------------------------------

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The broken-down UTC time of a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTimeParts {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl DateTimeParts {
    pub fn of(ts: Timestamp) -> DateTimeParts {
        let days = ts.div_euclid(86_400_000);
        let ms = ts.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        DateTimeParts {
            year,
            month,
            day,
            hour: (ms / 3_600_000) as u32,
            minute: (ms / 60_000 % 60) as u32,
            second: (ms / 1000 % 60) as u32,
            millis: (ms % 1000) as u32,
        }
    }
}

/// The wall clock as a [`Timestamp`] (milliseconds since the epoch; 0 if the clock is before
/// it), for what stamps records with their arrival: ingest, generators, checkpoint metadata.
pub fn wall_clock_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Timestamp)
}

/// Formats a timestamp as Flink prints TIMESTAMP(3): `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn format_timestamp(ts: Timestamp, out: &mut String) {
    write_time(ts, ' ', "", out);
}

/// Formats a timestamp as RFC 3339 in UTC with milliseconds (`2026-01-01T00:00:01.234Z`), as
/// event payloads and HTTP APIs write times.
pub fn format_rfc3339(ts: Timestamp, out: &mut String) {
    write_time(ts, 'T', "Z", out);
}

fn write_time(ts: Timestamp, separator: char, zone: &str, out: &mut String) {
    use std::fmt::Write;
    let p = DateTimeParts::of(ts);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}.{:03}{zone}",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.millis
    );
}

/// The timestamp as a new string (see [`format_timestamp`]).
pub fn timestamp_to_string(ts: Timestamp) -> String {
    let mut s = String::with_capacity(23);
    format_timestamp(ts, &mut s);
    s
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff]` or RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)` into
/// milliseconds since the epoch, UTC. Without an offset the time is taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 10 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = b.get(range)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0u32, |acc, d| acc * 10 + (d - b'0') as u32))
    };
    let year = num(0..4)? as i64;
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let month = num(5..7)?;
    let day = num(8..10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut millis, mut offset_ms) = (0, 0, 0, 0, 0i64);
    if b.len() > 10 {
        if !(b[10] == b' ' || b[10] == b'T') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return None;
        }
        hour = num(11..13)?;
        minute = num(14..16)?;
        second = num(17..19)?;
        let mut rest = &b[19..];
        if rest.first() == Some(&b'.') {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            let frac = &rest[1..1 + digits];
            let mut ms = 0u32;
            for i in 0..3 {
                ms = ms * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
            }
            millis = ms;
            rest = &rest[1 + digits..];
        }
        // RFC 3339's offset: `Z`, or `+HH:MM` / `-HH:MM` (the time is converted to UTC).
        offset_ms = match rest {
            [] | [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let d = |i: usize| (digits[i] - b'0') as i64;
                let (h, m) = (d(0) * 10 + d(1), d(2) * 10 + d(3));
                if h > 23 || m > 59 {
                    return None;
                }
                let ms = (h * 60 + m) * 60_000;
                if *sign == b'+' {
                    ms
                } else {
                    -ms
                }
            }
            _ => return None,
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
    }
    if day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(
        days * 86_400_000
            + hour as i64 * 3_600_000
            + minute as i64 * 60_000
            + second as i64 * 1000
            + millis as i64
            - offset_ms,
    )
}

/// Days in a month of the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses a duration such as `4s`, `500ms`, `10 s`, `2min`, `1h`, `1d` into milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "second" | "seconds" => 1000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let ts = parse_timestamp("2026-01-01 00:01:39.999").unwrap();
        assert_eq!(ts, 1_767_225_600_000 + 99_999);
        assert_eq!(timestamp_to_string(ts), "2026-01-01 00:01:39.999");
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.5Z"), Some(-500));
        assert_eq!(timestamp_to_string(-500), "1969-12-31 23:59:59.500");
        assert_eq!(parse_timestamp("2026-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("2026-02-30 00:00:00"), None);
        assert!(parse_timestamp("2024-02-29T00:00:00Z").is_some());
        // RFC 3339 offsets are converted to UTC.
        assert_eq!(
            parse_timestamp("2026-01-01T02:30:00.250+02:30"),
            parse_timestamp("2026-01-01 00:00:00.250")
        );
        assert_eq!(
            parse_timestamp("2025-12-31T19:00:00-05:00"),
            parse_timestamp("2026-01-01 00:00:00")
        );
        assert_eq!(parse_timestamp("2026-01-01T00:00:00+2:00"), None);
        assert_eq!(parse_timestamp("2026-01-01 00:00:0x"), None);
        for days in [-800_000i64, -1, 0, 1, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn decimals_parse_format_and_compare() {
        let d = Decimal::parse("-0.908").unwrap();
        assert_eq!(
            d,
            Decimal {
                unscaled: -908,
                scale: 3
            }
        );
        assert_eq!(d.to_string(), "-0.908");
        assert_eq!(
            Decimal {
                unscaled: 124_784_624,
                scale: 3
            }
            .to_string(),
            "124784.624"
        );
        assert_eq!(
            Value::Decimal(Decimal {
                unscaled: 10,
                scale: 1
            }),
            Value::Decimal(Decimal {
                unscaled: 1,
                scale: 0
            })
        );
        assert_eq!(Decimal::parse("abc"), None);
        assert_eq!(Decimal::parse("."), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("4s"), Some(4000));
        assert_eq!(parse_duration("10 s"), Some(10_000));
        assert_eq!(parse_duration("250ms"), Some(250));
        assert_eq!(parse_duration("2min"), Some(120_000));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}

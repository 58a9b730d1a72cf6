//! JSON-lines output in exactly the layout of Flink's expected result files, so that Eddy's output
//! can be compared with them line for line (and with `compare.py`).
//!
//! Bytes are written straight into a caller-owned buffer: a sink formats millions of rows, and
//! going through `serde_json::Value` or `fmt` for every field would dominate its cost.

use eddy_runtime::types::{format_timestamp, DateTimeParts, Schema, Timestamp, Value};
use std::io::Write as _;

/// Appends one row as a JSON object line (keys = schema names, in order, then '\n') to `out`.
///
/// Values are written by their own variant, not by the declared type, so a row never turns into
/// text that misstates it. A value missing at the end of a short row is written as `null`, and
/// values beyond the schema are ignored: a sink must not crash on a malformed row.
pub fn write_json_row(schema: &Schema, values: &[Value], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, field) in schema.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&field.name, out);
        out.push(b':');
        write_json_value(values.get(i).unwrap_or(&Value::Null), out);
    }
    out.extend_from_slice(b"}\n");
}

/// Appends one value as JSON the way Flink's expected files show it: BIGINT as an integer,
/// DOUBLE in its shortest round-trip form with ".0" when integral (NaN and infinities, which JSON
/// cannot hold, as null), DECIMAL as a number with all of its scale digits, TIMESTAMP as
/// `"YYYY-MM-DD HH:MM:SS.mmm"`, an interval as integer milliseconds.
pub fn write_json_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(v) | Value::Interval(v) => write_i64(*v, out),
        Value::Float(v) => write_f64(*v, out),
        Value::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Value::Str(s) => write_json_string(s, out),
        Value::Timestamp(ts) => {
            out.push(b'"');
            write_timestamp(*ts, out);
            out.push(b'"');
        }
    }
}

/// What each ASCII byte needs in a JSON string: 0 = itself, b'u' = `\u00XX`, else `\` + that byte.
const ESCAPE: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `s` as a quoted JSON string: quotes, backslashes and control characters escaped (the
/// usual short forms `\n`, `\t`, ... where JSON has them, `\u00XX` otherwise), everything else,
/// non-ASCII included, copied as UTF-8 so that output stays readable and compact.
pub fn write_json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match ESCAPE.get(b as usize) {
            Some(&e) if e != 0 => e,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an integer in decimal without going through `fmt`.
pub(crate) fn write_i64(v: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut magnitude = v.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

/// Appends a double as Java and Python print it: shortest round-trip digits, ".0" for integral
/// values, exponent form for very large or small magnitudes (both are valid JSON numbers).
fn write_f64(v: f64, out: &mut Vec<u8>) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let _ = write!(out, "{v:e}");
        return;
    }
    let start = out.len();
    let _ = write!(out, "{v}");
    if !out[start..].contains(&b'.') {
        out.extend_from_slice(b".0");
    }
}

/// Appends two digits.
#[inline]
fn push2(v: u32, out: &mut Vec<u8>) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Appends `YYYY-MM-DD HH:MM:SS.mmm` (no quotes).
pub(crate) fn write_timestamp(ts: Timestamp, out: &mut Vec<u8>) {
    let p = DateTimeParts::of(ts);
    if !(0..=9999).contains(&p.year) {
        let mut text = String::new();
        format_timestamp(ts, &mut text);
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let year = p.year as u32;
    push2(year / 100, out);
    push2(year % 100, out);
    out.push(b'-');
    push2(p.month, out);
    out.push(b'-');
    push2(p.day, out);
    out.push(b' ');
    push2(p.hour, out);
    out.push(b':');
    push2(p.minute, out);
    out.push(b':');
    push2(p.second, out);
    out.push(b'.');
    out.push(b'0' + (p.millis / 100) as u8);
    push2(p.millis % 100, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_runtime::types::{timestamp_to_string, DataType, Decimal, Field};

    fn value_text(v: &Value) -> String {
        let mut out = Vec::new();
        write_json_value(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_rows_like_flink() {
        let schema = Schema::new(vec![
            Field::new("auction", DataType::BigInt),
            Field::new(
                "price",
                DataType::Decimal {
                    precision: 23,
                    scale: 3,
                },
            ),
            Field::new("dateTime", DataType::Timestamp),
            Field::new("extra", DataType::String),
            Field::new("avg", DataType::Double),
            Field::new("flag", DataType::Boolean),
            Field::new("gone", DataType::String),
        ]);
        let values = vec![
            Value::Int(1000),
            Value::Decimal(Decimal {
                unscaled: 124_784_624,
                scale: 3,
            }),
            Value::Timestamp(1_767_225_600_581),
            Value::str("ksiu"),
            Value::Float(1000.0),
            Value::Bool(false),
            Value::Null,
        ];
        let mut out = Vec::new();
        write_json_row(&schema, &values, &mut out);
        write_json_row(&schema, &values[..2], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"auction":1000,"price":124784.624,"dateTime":"2026-01-01 00:00:00.581","extra":"ksiu","avg":1000.0,"flag":false,"gone":null}"#,
                "\n",
                r#"{"auction":1000,"price":124784.624,"dateTime":null,"extra":null,"avg":null,"flag":null,"gone":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn numbers() {
        for (v, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1000.0, "1000.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (124784.624, "124784.624"),
            (-2.5, "-2.5"),
            (1e16, "1e16"),
            (1.5e-7, "1.5e-7"),
            (0.0001, "0.0001"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ] {
            assert_eq!(value_text(&Value::Float(v)), want);
            if v.is_finite() {
                assert_eq!(want.parse::<f64>().unwrap(), v);
            }
        }
        for v in [0, 7, -7, 1234567890, i64::MAX, i64::MIN] {
            assert_eq!(value_text(&Value::Int(v)), v.to_string());
        }
        assert_eq!(value_text(&Value::Interval(4000)), "4000");
        assert_eq!(
            value_text(&Value::Decimal(Decimal {
                unscaled: 1_000_000,
                scale: 3
            })),
            "1000.000"
        );
        assert_eq!(
            value_text(&Value::Decimal(Decimal {
                unscaled: -908,
                scale: 3
            })),
            "-0.908"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let s = "a\"b\\c\nd\te\u{1}f\u{7f}é😀/";
        let text = value_text(&Value::str(s));
        assert_eq!(text, "\"a\\\"b\\\\c\\nd\\te\\u0001f\u{7f}é😀/\"");
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn timestamps() {
        for ts in [
            0,
            1_767_225_600_581,
            -500,
            253_402_300_799_999,
            -62_167_219_200_000,
        ] {
            assert_eq!(
                value_text(&Value::Timestamp(ts)),
                format!("\"{}\"", timestamp_to_string(ts))
            );
        }
        // Outside years 0..=9999 the shared formatter decides.
        let far = 253_402_300_800_000;
        assert_eq!(
            value_text(&Value::Timestamp(far)),
            format!("\"{}\"", timestamp_to_string(far))
        );
    }
}

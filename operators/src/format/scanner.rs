//! A small, allocation-free JSON scanner shared by the Nexmark and generic JSON-lines parsers.
//!
//! Both parsers know the shape they want, so instead of building a document tree they walk the
//! line once: keys they care about are decoded straight into [`Value`]s, everything else is
//! skipped (but still checked to be valid JSON). Strings are returned as raw slices of the line
//! plus an "has escapes" flag, so the common escape-free case costs no copy at all.

use super::FormatError;
use eddy_runtime::types::{parse_timestamp, DataType, Decimal, Value, POW10};
use std::fmt;
use std::sync::Arc;

/// How deeply skipped values may nest before the line is rejected (keeps the stack bounded).
const MAX_DEPTH: usize = 128;

/// The longest token text quoted back in an error message.
const MAX_FOUND_LEN: usize = 60;

/// A structural JSON error at a byte position of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: usize,
    pub what: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.pos, self.what)
    }
}

impl From<SyntaxError> for FormatError {
    fn from(e: SyntaxError) -> Self {
        FormatError(e.to_string())
    }
}

/// Why a value could not be read: broken JSON, or valid JSON of the wrong type. The caller adds
/// the field name, which the scanner does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    Syntax(SyntaxError),
    Mismatch(String),
}

impl From<SyntaxError> for ReadError {
    fn from(e: SyntaxError) -> Self {
        ReadError::Syntax(e)
    }
}

impl ReadError {
    /// The error as a [`FormatError`] that starts with the field's name.
    pub fn named(self, name: impl fmt::Display) -> FormatError {
        match self {
            ReadError::Syntax(e) => FormatError(format!("{name}: {e}")),
            ReadError::Mismatch(msg) => FormatError(format!("{name}: {msg}")),
        }
    }
}

/// A cursor over one line of JSON text.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when one of the eight bytes of `chunk` is a quote, a backslash or a control character
/// (may also flag bytes right after a real match; the byte loop decides).
#[inline(always)]
fn has_special(chunk: u64) -> u64 {
    let quote = chunk ^ (LO * b'"' as u64);
    let backslash = chunk ^ (LO * b'\\' as u64);
    let zero_quote = quote.wrapping_sub(LO) & !quote;
    let zero_backslash = backslash.wrapping_sub(LO) & !backslash;
    let control = chunk.wrapping_sub(LO * 0x20) & !chunk;
    (zero_quote | zero_backslash | control) & HI
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Scanner { buf, pos: 0 }
    }

    /// A scanner at byte `pos` of `buf` (to come back to a value skipped earlier).
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Scanner { buf, pos }
    }

    /// The current byte position.
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves back to a position returned by [`Scanner::pos`].
    #[inline]
    pub fn reset(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// An error at the current position.
    pub fn error(&self, what: &'static str) -> SyntaxError {
        SyntaxError {
            pos: self.pos,
            what,
        }
    }

    /// Skips JSON whitespace.
    #[inline]
    pub fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The byte at the cursor without consuming it.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Skips whitespace, then peeks.
    #[inline]
    pub fn peek_ws(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    /// Consumes `n` bytes already looked at.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// True when only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.buf.len()
    }

    /// Skips whitespace and consumes `byte`, or fails with `what`.
    #[inline]
    pub fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), SyntaxError> {
        if self.peek_ws() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Consumes the literal `lit` (`null`, `true`, `false`) if it is next.
    #[inline]
    pub fn literal(&mut self, lit: &[u8]) -> bool {
        if self.buf[self.pos.min(self.buf.len())..].starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    /// Reads a string (after optional whitespace). Returns the raw text between the quotes and
    /// whether it contains escapes (then [`unescape`] gives its value). Escapes are checked for
    /// validity here; raw control characters are rejected.
    #[inline]
    pub fn string(&mut self) -> Result<(&'a [u8], bool), SyntaxError> {
        if self.peek_ws() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            while let Some(chunk) = self.buf.get(self.pos..self.pos + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                if has_special(u64::from_le_bytes(word)) != 0 {
                    break;
                }
                self.pos += 8;
            }
            match self.buf.get(self.pos) {
                None => {
                    return Err(SyntaxError {
                        pos: open,
                        what: "unterminated string",
                    })
                }
                Some(b'"') => {
                    let raw = &self.buf[start..self.pos];
                    self.pos += 1;
                    return Ok((raw, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.buf.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 2
                        }
                        Some(b'u') => {
                            if hex4(self.buf, self.pos + 2).is_none() {
                                return Err(self.error("invalid \\u escape in string"));
                            }
                            self.pos += 6;
                        }
                        _ => return Err(self.error("invalid escape in string")),
                    }
                }
                Some(&b) if b < 0x20 => {
                    return Err(self.error("unescaped control character in string"))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Reads a number token (after optional whitespace), checked against JSON's grammar.
    /// Returns its text and whether it is an integer (no fraction, no exponent).
    #[inline]
    pub fn number(&mut self) -> Result<(&'a [u8], bool), SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after the decimal point"));
            }
            self.skip_digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.skip_digits();
        }
        Ok((&self.buf[start..self.pos], integer))
    }

    #[inline]
    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    /// Skips one value of any type, checking that it is valid JSON.
    pub fn skip_value(&mut self) -> Result<(), SyntaxError> {
        self.skip_value_at(0)
    }

    fn skip_value_at(&mut self, depth: usize) -> Result<(), SyntaxError> {
        match self.peek_ws() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("nested too deeply"));
                }
                self.pos += 1;
                if self.peek_ws() == Some(b'}') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.expect(b':', "expected ':' after a key")?;
                    self.skip_value_at(depth + 1)?;
                    match self.peek_ws() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or '}' in an object")),
                    }
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("nested too deeply"));
                }
                self.pos += 1;
                if self.peek_ws() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value_at(depth + 1)?;
                    match self.peek_ws() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or ']' in an array")),
                    }
                }
            }
            Some(b't') if self.literal(b"true") => Ok(()),
            Some(b'f') if self.literal(b"false") => Ok(()),
            Some(b'n') if self.literal(b"null") => Ok(()),
            None => Err(self.error("unexpected end of line, expected a value")),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    /// Consumes `null` if it is next (after whitespace).
    #[inline]
    pub fn null(&mut self) -> bool {
        self.peek_ws() == Some(b'n') && self.literal(b"null")
    }

    /// Skips the value at the cursor and describes it for an error message: its JSON text
    /// (shortened) for scalars, "an object" / "an array" for containers.
    pub fn describe(&mut self) -> Result<String, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        self.skip_value()?;
        Ok(match self.buf.get(start) {
            Some(b'{') => "an object".to_string(),
            Some(b'[') => "an array".to_string(),
            _ => shorten(&self.buf[start..self.pos]),
        })
    }

    /// Rewinds to `start` and builds the "expected X, found Y" error for the value there.
    pub fn mismatch(&mut self, start: usize, expected: &str) -> ReadError {
        self.pos = start;
        match self.describe() {
            Ok(found) => ReadError::Mismatch(format!("expected {expected}, found {found}")),
            Err(e) => ReadError::Syntax(e),
        }
    }
}

/// Token text for an error message, cut to a readable length.
fn shorten(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    if text.chars().count() <= MAX_FOUND_LEN {
        text.into_owned()
    } else {
        let cut: String = text.chars().take(MAX_FOUND_LEN).collect();
        format!("{cut}...")
    }
}

/// The value of four hex digits at `at`.
#[inline]
fn hex4(buf: &[u8], at: usize) -> Option<u32> {
    let digits = buf.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes the escapes of a raw string (as returned by [`Scanner::string`]) into `out`.
/// `\u` surrogate pairs are combined; a lone surrogate is an error, as in serde_json.
/// The result is not yet checked to be UTF-8 (the raw bytes between escapes may not be).
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let run = raw[i..]
            .iter()
            .position(|&b| b == b'\\')
            .unwrap_or(raw.len() - i);
        out.extend_from_slice(&raw[i..i + run]);
        i += run;
        if i >= raw.len() {
            break;
        }
        let simple = match raw.get(i + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let unit = hex4(raw, i + 2).ok_or("invalid \\u escape in string")?;
                i += 6;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        let low = if raw.get(i..i + 2) == Some(b"\\u") {
                            hex4(raw, i + 2)
                        } else {
                            None
                        };
                        match low {
                            Some(low @ 0xDC00..=0xDFFF) => {
                                i += 6;
                                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                            }
                            _ => return Err("unpaired surrogate in \\u escape"),
                        }
                    }
                    0xDC00..=0xDFFF => return Err("unpaired surrogate in \\u escape"),
                    _ => unit,
                };
                let ch = char::from_u32(code).ok_or("invalid \\u escape in string")?;
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            _ => return Err("invalid escape in string"),
        };
        out.push(simple);
        i += 2;
    }
    Ok(())
}

/// Parses an integer token (JSON grammar already checked); None when it does not fit an i64.
#[inline]
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Converts decimal text (JSON number grammar, plus a leading '+', a bare ".5" or "5.") to a
/// [`Decimal`] at exactly `scale`, rounding half away from zero as Flink's DECIMAL casts do.
/// Fails when the text is not a number or the value needs more than `precision` digits.
pub(crate) fn decimal_from_text(
    text: &[u8],
    precision: u8,
    scale: u8,
) -> Result<Decimal, &'static str> {
    if scale as usize >= POW10.len() {
        return Err("DECIMAL scale above 18 is not supported");
    }
    let mut i = 0;
    let negative = match text.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digit_run = |from: usize| {
        from + text[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int_end = digit_run(i);
    let int_digits = &text[i..int_end];
    i = int_end;
    let mut frac_digits: &[u8] = &[];
    if text.get(i) == Some(&b'.') {
        let frac_end = digit_run(i + 1);
        frac_digits = &text[i + 1..frac_end];
        i = frac_end;
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err("not a number");
    }
    let mut exponent: i64 = 0;
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match text.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_end = digit_run(i);
        if exp_end == i {
            return Err("not a number");
        }
        for &d in &text[i..exp_end] {
            // Saturate: anything beyond ±100000 is out of range or rounds to zero anyway.
            exponent = (exponent * 10 + (d - b'0') as i64).min(100_000);
        }
        if exp_negative {
            exponent = -exponent;
        }
        i = exp_end;
    }
    if i != text.len() {
        return Err("not a number");
    }
    // value = digits * 10^(exponent - frac_len); unscaled = value * 10^scale.
    let total = (int_digits.len() + frac_digits.len()) as i64;
    let shift = scale as i64 + exponent - frac_digits.len() as i64;
    let keep = if shift >= 0 { total } else { total + shift };
    let limit: i128 = if (precision as usize) < POW10.len() {
        POW10[precision as usize] as i128
    } else {
        i64::MAX as i128 + 1
    };
    let mut magnitude: i128 = 0;
    let mut round_up = false;
    for (k, &d) in int_digits.iter().chain(frac_digits).enumerate() {
        let k = k as i64;
        let d = (d - b'0') as i128;
        if k < keep {
            magnitude = magnitude * 10 + d;
            if magnitude >= limit {
                return Err("out of range");
            }
        } else {
            round_up = k == keep && d >= 5;
            break;
        }
    }
    if shift > 0 && magnitude != 0 {
        for _ in 0..shift {
            magnitude *= 10;
            if magnitude >= limit {
                return Err("out of range");
            }
        }
    }
    if round_up {
        magnitude += 1;
    }
    if magnitude >= limit {
        return Err("out of range");
    }
    let unscaled = magnitude as i64;
    Ok(Decimal {
        unscaled: if negative { -unscaled } else { unscaled },
        scale,
    })
}

/// Builds a shared string from raw string bytes, decoding escapes through `scratch`.
#[inline]
fn make_str(raw: &[u8], escaped: bool, scratch: &mut Vec<u8>) -> Result<Arc<str>, ReadError> {
    let bytes: &[u8] = if escaped {
        unescape(raw, scratch).map_err(|e| ReadError::Mismatch(e.to_string()))?;
        scratch
    } else {
        raw
    };
    std::str::from_utf8(bytes)
        .map(Arc::from)
        .map_err(|_| ReadError::Mismatch("invalid UTF-8 in string".to_string()))
}

/// Runs `f` on the text of a string value, decoding escapes through `scratch` when needed.
#[inline]
fn with_text<T>(
    raw: &[u8],
    escaped: bool,
    scratch: &mut Vec<u8>,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, ReadError> {
    if escaped {
        unescape(raw, scratch).map_err(|e| ReadError::Mismatch(e.to_string()))?;
        Ok(f(scratch))
    } else {
        Ok(f(raw))
    }
}

/// What a column of this type accepts, for "expected ..." messages.
pub(crate) fn expected_text(ty: DataType) -> String {
    match ty {
        DataType::Null => "null".to_string(),
        DataType::Boolean => "true or false".to_string(),
        DataType::BigInt => "an integer".to_string(),
        DataType::Double => "a number".to_string(),
        DataType::Decimal { precision, scale } => {
            format!("a number or numeric string that fits DECIMAL({precision}, {scale})")
        }
        DataType::String => "a string".to_string(),
        DataType::Timestamp => {
            "a timestamp ('YYYY-MM-DD HH:MM:SS.mmm', ISO 8601, or epoch milliseconds)".to_string()
        }
        DataType::Interval => "an integer (milliseconds)".to_string(),
    }
}

/// Reads the value at the cursor as a column of type `ty`. JSON null gives [`Value::Null`] for
/// every type; other mismatches are errors (no silent coercion: BIGINT does not take "12").
#[inline]
pub(crate) fn read_value(
    sc: &mut Scanner<'_>,
    ty: DataType,
    scratch: &mut Vec<u8>,
) -> Result<Value, ReadError> {
    let first = match sc.peek_ws() {
        Some(b) => b,
        None => return Err(sc.error("unexpected end of line, expected a value").into()),
    };
    let start = sc.pos();
    if first == b'n' {
        return if sc.literal(b"null") {
            Ok(Value::Null)
        } else {
            Err(sc.error("expected a value").into())
        };
    }
    let is_number = matches!(first, b'-' | b'0'..=b'9');
    match ty {
        DataType::String if first == b'"' => {
            let (raw, escaped) = sc.string()?;
            Ok(Value::Str(make_str(raw, escaped, scratch)?))
        }
        DataType::BigInt | DataType::Interval if is_number => {
            let (text, integer) = sc.number()?;
            match (integer, parse_i64(text)) {
                (true, Some(v)) if ty == DataType::BigInt => Ok(Value::Int(v)),
                (true, Some(v)) => Ok(Value::Interval(v)),
                (true, None) => Err(sc.mismatch(start, &format!("{} in range", expected_text(ty)))),
                _ => Err(sc.mismatch(start, &expected_text(ty))),
            }
        }
        DataType::Timestamp if first == b'"' => {
            let (raw, escaped) = sc.string()?;
            let parsed = with_text(raw, escaped, scratch, |text| {
                std::str::from_utf8(text).ok().and_then(parse_timestamp)
            })?;
            match parsed {
                Some(ts) => Ok(Value::Timestamp(ts)),
                None => Err(sc.mismatch(start, &expected_text(ty))),
            }
        }
        DataType::Timestamp if is_number => {
            let (text, integer) = sc.number()?;
            match parse_i64(text) {
                Some(ms) if integer => Ok(Value::Timestamp(ms)),
                _ => Err(sc.mismatch(start, &expected_text(ty))),
            }
        }
        DataType::Double if is_number => {
            let (text, _) = sc.number()?;
            // The token is ASCII and follows JSON's grammar, a subset of Rust's float syntax.
            match std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
            {
                Some(v) => Ok(Value::Float(v)),
                None => Err(sc.mismatch(start, &expected_text(ty))),
            }
        }
        DataType::Decimal { precision, scale } if is_number || first == b'"' => {
            let parsed = if is_number {
                let (text, _) = sc.number()?;
                decimal_from_text(text, precision, scale)
            } else {
                let (raw, escaped) = sc.string()?;
                with_text(raw, escaped, scratch, |text| {
                    decimal_from_text(text.trim_ascii(), precision, scale)
                })?
            };
            match parsed {
                Ok(d) => Ok(Value::Decimal(d)),
                Err(why) => {
                    let expected = format!("{} ({why})", expected_text(ty));
                    Err(sc.mismatch(start, &expected))
                }
            }
        }
        DataType::Boolean if first == b't' && sc.literal(b"true") => Ok(Value::Bool(true)),
        DataType::Boolean if first == b'f' && sc.literal(b"false") => Ok(Value::Bool(false)),
        DataType::Null => {
            sc.skip_value()?;
            Ok(Value::Null)
        }
        _ => Err(sc.mismatch(start, &expected_text(ty))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(text: &str) -> Result<usize, SyntaxError> {
        let mut sc = Scanner::new(text.as_bytes());
        sc.skip_value()?;
        Ok(sc.pos())
    }

    #[test]
    fn skips_any_json_value() {
        let doc = r#" {"a":[1,-2.5e+3,{"b":null,"c":[true,false,[]]}],"d":{},"e":"x\"\\\u00e9"} "#;
        assert_eq!(skip(doc), Ok(doc.len() - 1));
        assert_eq!(skip("-0"), Ok(2));
        assert!(skip("{\"a\" 1}").is_err());
        assert!(skip("{\"a\":1,}").is_err());
        assert!(skip("[1 2]").is_err());
        assert!(skip("\"abc").is_err());
        assert!(skip("\"a\\x\"").is_err());
        assert!(skip("\"a\\u12\"").is_err());
        assert!(skip("\"a\tb\"").is_err());
        assert!(skip("nul").is_err());
        assert!(skip("1.").is_err());
        assert!(skip("1e").is_err());
        assert!(skip("+1").is_err());
        assert!(skip(&"[".repeat(1000)).is_err());
    }

    #[test]
    fn strings_and_escapes() {
        for (json, want) in [
            (
                r#""plain text long enough for the fast path""#,
                "plain text long enough for the fast path",
            ),
            (r#""q\"b\\s\/ \b\f\n\r\t""#, "q\"b\\s/ \u{8}\u{c}\n\r\t"),
            (r#""caf\u00e9 \u20ac""#, "café €"),
            (r#""\ud83d\ude00 smile""#, "😀 smile"),
            (r#""ünïcödé raw""#, "ünïcödé raw"),
        ] {
            let mut sc = Scanner::new(json.as_bytes());
            let mut scratch = Vec::new();
            let v = read_value(&mut sc, DataType::String, &mut scratch).unwrap();
            assert_eq!(v, Value::str(want), "{json}");
            assert_eq!(sc.pos(), json.len());
        }
        for bad in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83d\u0041""#] {
            let mut sc = Scanner::new(bad.as_bytes());
            assert!(
                read_value(&mut sc, DataType::String, &mut Vec::new()).is_err(),
                "{bad}"
            );
        }
        let mut sc = Scanner::new(b"\"\xff\xfe\"");
        assert_eq!(
            read_value(&mut sc, DataType::String, &mut Vec::new()),
            Err(ReadError::Mismatch("invalid UTF-8 in string".into()))
        );
    }

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
    }

    #[test]
    fn decimals_round_half_up_and_check_precision() {
        let d = |t: &str, p, s| decimal_from_text(t.as_bytes(), p, s).map(|d| d.to_string());
        assert_eq!(d("124784.624", 23, 3).as_deref(), Ok("124784.624"));
        assert_eq!(d("1000", 10, 3).as_deref(), Ok("1000.000"));
        assert_eq!(d("1.2345", 10, 2).as_deref(), Ok("1.23"));
        assert_eq!(d("1.235", 10, 2).as_deref(), Ok("1.24"));
        assert_eq!(d("-1.235", 10, 2).as_deref(), Ok("-1.24"));
        assert_eq!(d("1.5e2", 10, 0).as_deref(), Ok("150"));
        assert_eq!(d("15E-1", 10, 2).as_deref(), Ok("1.50"));
        assert_eq!(d("0.004", 10, 2).as_deref(), Ok("0.00"));
        assert_eq!(d("0.005", 10, 2).as_deref(), Ok("0.01"));
        assert_eq!(d("1e-9999999", 10, 2).as_deref(), Ok("0.00"));
        assert_eq!(d("0e999999999", 10, 2).as_deref(), Ok("0.00"));
        assert_eq!(d("+.5", 10, 1).as_deref(), Ok("0.5"));
        assert_eq!(d("99.999", 4, 2), Err("out of range"));
        assert_eq!(d("100", 4, 2), Err("out of range"));
        assert_eq!(d("99.99", 4, 2).as_deref(), Ok("99.99"));
        assert_eq!(d("1e30", 38, 2), Err("out of range"));
        assert_eq!(d("abc", 10, 2), Err("not a number"));
        assert_eq!(d("1.2.3", 10, 2), Err("not a number"));
        assert_eq!(d("", 10, 2), Err("not a number"));
        assert_eq!(d(".", 10, 2), Err("not a number"));
        assert_eq!(d("1e", 10, 2), Err("not a number"));
    }

    #[test]
    fn typed_values_and_mismatches() {
        let read = |json: &str, ty| {
            let mut sc = Scanner::new(json.as_bytes());
            read_value(&mut sc, ty, &mut Vec::new())
        };
        assert_eq!(read("42", DataType::BigInt), Ok(Value::Int(42)));
        assert_eq!(read(" null", DataType::BigInt), Ok(Value::Null));
        assert_eq!(
            read("\"abc\"", DataType::BigInt),
            Err(ReadError::Mismatch(
                "expected an integer, found \"abc\"".into()
            ))
        );
        assert_eq!(
            read("1.5", DataType::BigInt),
            Err(ReadError::Mismatch("expected an integer, found 1.5".into()))
        );
        assert_eq!(
            read("{\"a\":1}", DataType::String),
            Err(ReadError::Mismatch(
                "expected a string, found an object".into()
            ))
        );
        assert_eq!(read("2.5e1", DataType::Double), Ok(Value::Float(25.0)));
        assert_eq!(read("true", DataType::Boolean), Ok(Value::Bool(true)));
        assert!(read("\"true\"", DataType::Boolean).is_err());
        assert_eq!(
            read("\"2026-01-01 00:00:00.001\"", DataType::Timestamp),
            Ok(Value::Timestamp(1_767_225_600_001))
        );
        assert_eq!(
            read("1767225600001", DataType::Timestamp),
            Ok(Value::Timestamp(1_767_225_600_001))
        );
        assert!(read("\"yesterday\"", DataType::Timestamp).is_err());
        assert_eq!(read("[1,2]", DataType::Null), Ok(Value::Null));
        assert!(matches!(
            read("nope", DataType::String),
            Err(ReadError::Syntax(_))
        ));
    }
}

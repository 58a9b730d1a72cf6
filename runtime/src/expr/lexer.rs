//! Splits expression text into tokens with byte spans, so the parser never deals with
//! characters and every error can point at the offending text.

use super::ExprError;
use std::ops::Range;

/// One lexical unit. Keywords are plain identifiers: the parser decides from context whether
/// `timestamp` is a keyword or a column name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// A `` `backquoted` `` identifier: never a keyword.
    QuotedIdent(String),
    /// Number literals keep their text (in the span) so the parser can apply a leading minus
    /// before converting, which makes `-9223372036854775808` representable.
    Integer,
    Decimal,
    Double,
    Str(String),
    LParen,
    RParen,
    Comma,
    Dot,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Concat,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Range<usize>,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Tokenizes the whole text; the last token is always `Eof` with an empty span at the end.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let single = |tok: Tok| (tok, 1usize);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                i = text[i..].find('\n').map_or(bytes.len(), |p| i + p);
                continue;
            }
            b'/' if next == Some(b'*') => match text[i + 2..].find("*/") {
                Some(p) => {
                    i += p + 4;
                    continue;
                }
                None => {
                    return Err(ExprError::new("unterminated comment", start..bytes.len())
                        .with_help("close the comment with `*/`"))
                }
            },
            b'\'' => {
                let (value, end) = lex_string(text, start)?;
                tokens.push(Token {
                    tok: Tok::Str(value),
                    span: start..end,
                });
                i = end;
                continue;
            }
            b'`' => {
                let (name, end) = lex_quoted_ident(text, start)?;
                tokens.push(Token {
                    tok: Tok::QuotedIdent(name),
                    span: start..end,
                });
                i = end;
                continue;
            }
            b'0'..=b'9' => {
                let (tok, end) = lex_number(text, start)?;
                tokens.push(Token {
                    tok,
                    span: start..end,
                });
                i = end;
                continue;
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let (tok, end) = lex_number(text, start)?;
                tokens.push(Token {
                    tok,
                    span: start..end,
                });
                i = end;
                continue;
            }
            b'(' => single(Tok::LParen),
            b')' => single(Tok::RParen),
            b',' => single(Tok::Comma),
            b'.' => single(Tok::Dot),
            b'+' => single(Tok::Plus),
            b'-' => single(Tok::Minus),
            b'*' => single(Tok::Star),
            b'/' => single(Tok::Slash),
            b'%' => single(Tok::Percent),
            b'=' if next == Some(b'=') => (Tok::Eq, 2),
            b'=' => single(Tok::Eq),
            b'|' if next == Some(b'|') => (Tok::Concat, 2),
            b'!' if next == Some(b'=') => (Tok::Ne, 2),
            b'<' if next == Some(b'=') => (Tok::Le, 2),
            b'<' if next == Some(b'>') => (Tok::Ne, 2),
            b'<' => single(Tok::Lt),
            b'>' if next == Some(b'=') => (Tok::Ge, 2),
            b'>' => single(Tok::Gt),
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                if is_ident_start(ch) {
                    let end = text[i..]
                        .char_indices()
                        .find(|(_, c)| !is_ident_char(*c))
                        .map_or(bytes.len(), |(p, _)| i + p);
                    tokens.push(Token {
                        tok: Tok::Ident(text[i..end].to_string()),
                        span: i..end,
                    });
                    i = end;
                    continue;
                }
                let span = i..i + ch.len_utf8();
                let err = ExprError::new(format!("unexpected character `{ch}`"), span);
                return Err(match ch {
                    '"' => err.with_help(
                        "write strings in 'single quotes' and identifiers in `backquotes`",
                    ),
                    ';' => err.with_help("an expression cannot contain `;`"),
                    _ => err,
                });
            }
        };
        tokens.push(Token {
            tok,
            span: start..start + len,
        });
        i = start + len;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        span: bytes.len()..bytes.len(),
    });
    Ok(tokens)
}

/// A 'string' with '' for a quote inside; returns the value and the end offset.
fn lex_string(text: &str, start: usize) -> Result<(String, usize), ExprError> {
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match text[i..].find('\'') {
            None => {
                return Err(
                    ExprError::new("unterminated string literal", start..text.len())
                        .with_help("end the string with `'` (write `''` for a quote inside it)"),
                )
            }
            Some(p) => {
                value.push_str(&text[i..i + p]);
                let quote = i + p;
                if text.as_bytes().get(quote + 1) == Some(&b'\'') {
                    value.push('\'');
                    i = quote + 2;
                } else {
                    return Ok((value, quote + 1));
                }
            }
        }
    }
}

/// A `` `quoted` `` identifier with ``` `` ``` for a backquote inside.
fn lex_quoted_ident(text: &str, start: usize) -> Result<(String, usize), ExprError> {
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match text[i..].find('`') {
            None => {
                return Err(
                    ExprError::new("unterminated quoted identifier", start..text.len())
                        .with_help("end the identifier with a backquote"),
                )
            }
            Some(p) => {
                value.push_str(&text[i..i + p]);
                let quote = i + p;
                if text.as_bytes().get(quote + 1) == Some(&b'`') {
                    value.push('`');
                    i = quote + 2;
                } else if value.is_empty() {
                    return Err(ExprError::new("empty quoted identifier", start..quote + 1));
                } else {
                    return Ok((value, quote + 1));
                }
            }
        }
    }
}

/// `123`, `1.5`, `.5`, `1.`, `1.5e3`, `2E-4`.
fn lex_number(text: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let b = text.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut tok = Tok::Integer;
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1);
        tok = Tok::Decimal;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            i = digits(j);
            tok = Tok::Double;
        }
    }
    if let Some(c) = text[i..].chars().next() {
        if is_ident_char(c) {
            let end = text[i..]
                .char_indices()
                .find(|(_, c)| !is_ident_char(*c))
                .map_or(text.len(), |(p, _)| i + p);
            return Err(ExprError::new(
                format!("invalid number `{}`", &text[start..end]),
                start..end,
            ));
        }
    }
    Ok((tok, i))
}

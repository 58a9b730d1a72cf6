//! Errors in a SQL script, shown the way job-file errors are: `file:line:col`, the line, a
//! caret under the place, and how to fix it.

use sqlparser::tokenizer::{Location, Span};
use std::fmt;

/// Where something is in a script: the file (by its index among the script's files), line and
/// column (both from 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub file: usize,
    pub line: u64,
    pub column: u64,
}

impl Pos {
    /// The start of `span` in `file`; `fallback` when sqlparser left the span empty (some AST
    /// nodes still have none).
    pub fn of(file: usize, span: Span, fallback: Pos) -> Pos {
        if span.start.line == 0 {
            fallback
        } else {
            Pos::at(file, span.start)
        }
    }

    pub fn at(file: usize, location: Location) -> Pos {
        Pos {
            file,
            line: location.line,
            column: location.column,
        }
    }
}

/// A problem in a SQL script.
#[derive(Debug, thiserror::Error)]
pub struct SqlError {
    /// The file's name, as given.
    pub file: String,
    /// Line and column (from 1); 0 when the error is about the whole script.
    pub line: u64,
    pub column: u64,
    /// The text of that line, for the caret.
    pub source_line: Option<String>,
    pub message: String,
    pub help: Option<String>,
}

impl SqlError {
    /// An error about the whole script (or the command line).
    pub fn general(message: impl Into<String>) -> SqlError {
        SqlError {
            file: String::new(),
            line: 0,
            column: 0,
            source_line: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> SqlError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, _) => write!(f, "error: {}", self.message)?,
            (false, 0) => write!(f, "error: {}: {}", self.file, self.message)?,
            (false, _) => write!(
                f,
                "error: {}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?,
        }
        if let Some(line) = &self.source_line {
            let caret = " ".repeat(
                line.chars()
                    .take(self.column.saturating_sub(1) as usize)
                    .count(),
            );
            write!(f, "\n  | {line}\n  | {caret}^")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// The script's files, to turn positions into messages.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<(String, String)>,
}

impl Sources {
    pub fn new(files: Vec<(String, String)>) -> Sources {
        Sources { files }
    }

    pub fn files(&self) -> &[(String, String)] {
        &self.files
    }

    /// An error at `pos`.
    pub fn error(&self, pos: Pos, message: impl Into<String>) -> SqlError {
        let (file, text) = self
            .files
            .get(pos.file)
            .map(|(f, t)| (f.clone(), Some(t)))
            .unwrap_or_default();
        let source_line = text
            .filter(|_| pos.line > 0)
            .and_then(|t| t.lines().nth(pos.line as usize - 1))
            .map(|l| l.to_string());
        SqlError {
            file,
            line: pos.line,
            column: pos.column,
            source_line,
            message: message.into(),
            help: None,
        }
    }

    /// A parser error of file `file`: sqlparser ends its messages with `at Line: L, Column: C`.
    pub fn parser_error(&self, file: usize, message: &str) -> SqlError {
        let (text, pos) = match message.rsplit_once(" at Line: ") {
            Some((text, at)) => {
                let mut parts = at.split(", Column: ");
                let line = parts.next().and_then(|l| l.trim().parse().ok());
                let column = parts.next().and_then(|c| c.trim().parse().ok());
                match (line, column) {
                    (Some(line), Some(column)) => (text, Pos { file, line, column }),
                    _ => (
                        message,
                        Pos {
                            file,
                            ..Pos::default()
                        },
                    ),
                }
            }
            None => (
                message,
                Pos {
                    file,
                    ..Pos::default()
                },
            ),
        };
        let text = text
            .trim_start_matches("sql parser error: ")
            .trim_start_matches("sql parser error:");
        self.error(pos, text.trim().to_string())
    }
}

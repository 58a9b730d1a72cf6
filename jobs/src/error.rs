//! Errors in job files, reported like a compiler does: file, line and column, the offending
//! line with a marker, what was expected and how to fix it.

use std::fmt;
use std::ops::Range;

/// A problem with a job definition. `Display` renders it for a terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    /// The job file, as given by the user.
    pub file: String,
    /// What is wrong, naming the node and field (`operator `max_bids`, field `aggregates[0]``).
    pub message: String,
    /// Where, when known: 1-based line and column, the source line and the marked width.
    pub location: Option<Location>,
    /// How to fix it.
    pub help: Option<String>,
}

/// A position in the job file.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub source_line: String,
    pub width: usize,
}

impl JobError {
    /// An error without a position (e.g. a file that cannot be read).
    pub fn new(file: &str, message: impl Into<String>) -> JobError {
        JobError {
            file: file.to_string(),
            message: message.into(),
            location: None,
            help: None,
        }
    }

    /// An error at a byte range of the job file's text.
    pub fn at(file: &str, text: &str, span: Range<usize>, message: impl Into<String>) -> JobError {
        JobError {
            file: file.to_string(),
            message: message.into(),
            location: Some(locate(text, span)),
            help: None,
        }
    }

    /// Adds a hint on how to fix it.
    pub fn help(mut self, help: impl Into<String>) -> JobError {
        self.help = Some(help.into());
        self
    }

    /// Adds a hint if there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> JobError {
        if help.is_some() {
            self.help = help;
        }
        self
    }
}

/// The largest char boundary of `text` at or before `i`.
fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Line, column and line text of a byte range. A range that does not fall on character
/// boundaries (a caller's arithmetic gone wrong) is moved to the nearest ones before it,
/// never a panic.
fn locate(text: &str, span: Range<usize>) -> Location {
    let start = floor_boundary(text, span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let end = floor_boundary(text, span.end.clamp(start, line_end));
    Location {
        line,
        column,
        source_line: text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string(),
        width: text[start..end].chars().count().max(1),
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        match &self.location {
            Some(loc) => {
                let gutter = loc.line.to_string().len();
                writeln!(
                    f,
                    "{:gutter$}--> {}:{}:{}",
                    "", self.file, loc.line, loc.column
                )?;
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{} | {}", loc.line, loc.source_line)?;
                write!(
                    f,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(loc.column - 1),
                    "^".repeat(loc.width)
                )?;
            }
            None => write!(f, "  --> {}", self.file)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JobError {}

/// The closest candidate to `name` by edit distance, if close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = edit_distance(&name.to_lowercase(), &c.to_lowercase());
        if d <= (name.len().max(3) / 3).max(1) && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_and_marker() {
        let text = "a = 1\nbad = \"xyz\"\n";
        let e = JobError::at("job.toml", text, 13..16, "unknown thing").help("use abc");
        let shown = e.to_string();
        assert!(shown.contains("--> job.toml:2:8"), "{shown}");
        assert!(shown.contains("2 | bad = \"xyz\""), "{shown}");
        assert!(shown.contains("|        ^^^"), "{shown}");
        assert!(shown.ends_with("help: use abc"), "{shown}");
    }

    #[test]
    fn suggests_near_names() {
        assert_eq!(suggest("fliter", ["filter", "select"]), Some("filter"));
        assert_eq!(suggest("zzz", ["filter", "select"]), None);
    }
}

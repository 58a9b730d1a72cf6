//! `eddy sql`: a Flink SQL shell over the embedded runtime.
//!
//! Statements are read from standard input, each ended by `;`. Declarations (CREATE TABLE,
//! CREATE VIEW, CREATE FUNCTION) and SET are checked and kept for the session; a SELECT runs
//! over them on the embedded runtime and prints its result as a table (an updating result is
//! shown as it stands at the end); INSERT INTO and EXECUTE STATEMENT SET run as jobs, as
//! `eddy run` would; EXPLAIN prints the job a statement makes. `SHOW TABLES`, `HELP` and `QUIT`
//! do what they say. An error names the statement, line and column, and the session goes on.

use clap::Args;
use eddy_jobs::{compile_str, CompileOptions};
use eddy_runtime::graph::{NodeKind, SinkConnector};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct SqlArgs {
    /// Scripts of declarations and settings run first, in order (e.g. the DDL of your tables).
    #[arg(value_name = "SCRIPT")]
    scripts: Vec<PathBuf>,
    /// Fill a `${NAME}` placeholder of the statements; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = crate::parse_param)]
    params: Vec<(String, String)>,
    /// The Nexmark table reads the built-in generator making N events instead of a file.
    #[arg(long, value_name = "N")]
    generate: Option<u64>,
    /// Event rate of --generate, in events per second of event time.
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 1000)]
    rate: u64,
    /// Rows of a SELECT result printed; the others are counted.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_rows: usize,
}

/// What a statement asks the shell to do, from its first words.
#[derive(Debug, PartialEq)]
enum Kind {
    /// Kept for the session: CREATE, SET.
    Declare,
    /// Runs and prints rows: SELECT, WITH, VALUES.
    Query,
    /// Runs as a job: INSERT, EXECUTE STATEMENT SET.
    Job,
    Explain,
    ShowTables,
    Help,
    Quit,
    Unknown,
}

/// `statement` without the comments before its first word.
fn without_leading_comments(mut statement: &str) -> &str {
    loop {
        statement = statement.trim_start();
        if let Some(rest) = statement.strip_prefix("--") {
            statement = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = statement.strip_prefix("/*") {
            statement = rest.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return statement;
        }
    }
}

fn kind_of(statement: &str) -> Kind {
    let words: Vec<String> = without_leading_comments(statement)
        .split_whitespace()
        .take(2)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    match words.first().map(String::as_str) {
        Some("CREATE" | "SET") => Kind::Declare,
        Some("SELECT" | "WITH" | "VALUES") => Kind::Query,
        Some("INSERT" | "EXECUTE" | "BEGIN") => Kind::Job,
        Some("EXPLAIN") => Kind::Explain,
        Some("SHOW") if words.get(1).map(String::as_str) == Some("TABLES") => Kind::ShowTables,
        Some("HELP") => Kind::Help,
        Some("QUIT" | "EXIT") => Kind::Quit,
        _ => Kind::Unknown,
    }
}

/// Splits complete statements (ended by `;` outside quotes and comments) off the front of
/// `buffer`; what follows the last one stays in it.
fn take_statements(buffer: &mut String) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut chars = buffer.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some('-'), '\n') => quote = None,
            (Some('*'), '*') if chars.peek().map(|(_, n)| *n) == Some('/') => {
                chars.next();
                quote = None;
            }
            (Some(q), c) if q == c && matches!(q, '\'' | '"' | '`') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '-') if chars.peek().map(|(_, n)| *n) == Some('-') => quote = Some('-'),
            (None, '/') if chars.peek().map(|(_, n)| *n) == Some('*') => quote = Some('*'),
            (None, ';') => {
                let text = buffer[start..=i].trim();
                if text != ";" {
                    statements.push(text.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    buffer.drain(..start);
    statements
}

/// The session: the declarations and settings so far, each a "file" of the script.
struct Session {
    args: SqlArgs,
    kept: Vec<(String, String)>,
    /// The tables and views `kept` declares, from the planner.
    declared: Vec<String>,
    /// Numbers the statements, for error positions.
    count: usize,
    work: tempfile::TempDir,
}

impl Session {
    /// The planner's options for `files`: a --param is for the whole session, so each
    /// script gets those its placeholders use.
    fn options(
        &self,
        files: &[(String, String)],
        select_to: Option<PathBuf>,
    ) -> eddy_sql::SqlOptions {
        let used = |name: &str| {
            let placeholder = format!("${{{name}}}");
            files.iter().any(|(_, text)| text.contains(&placeholder))
        };
        eddy_sql::SqlOptions {
            params: self
                .args
                .params
                .iter()
                .filter(|(name, _)| used(name))
                .cloned()
                .collect(),
            generate: self.args.generate.is_some(),
            select_to,
            ..Default::default()
        }
    }

    /// The session's statements and then `statement`.
    fn script(&mut self, statement: &str) -> Vec<(String, String)> {
        self.count += 1;
        let mut files = self.kept.clone();
        files.push((format!("statement {}", self.count), statement.to_string()));
        files
    }

    /// Plans and runs a script that writes somewhere; the job's graph for the caller's report,
    /// and a note on malformed input if there was any.
    fn run(
        &self,
        files: Vec<(String, String)>,
        select_to: Option<PathBuf>,
    ) -> Result<(eddy_runtime::graph::JobGraph, String), String> {
        let options = self.options(&files, select_to);
        let job = eddy_sql::compile_texts(files, &options).map_err(|e| e.to_string())?;
        let options = CompileOptions {
            parallelism: job.settings.parallelism,
            generate: self
                .args
                .generate
                .map(|events| crate::generator(events, self.args.rate)),
            ..Default::default()
        };
        let graph = compile_str(&job.name, &job.toml, &options).map_err(|e| e.to_string())?;
        let dead_letters = self
            .work
            .path()
            .join(format!("dead-letter-{}.jsonl", self.count));
        let malformed = eddy_operators::run_to_end(&graph, dead_letters.clone())
            .map_err(|e| format!("error: the job failed: {e:#}"))?;
        let note = match malformed {
            0 => String::new(),
            n => format!(
                "\n({n} malformed input line(s) skipped, with the reason, in {}, kept until the shell ends)",
                dead_letters.display()
            ),
        };
        Ok((graph, note))
    }

    /// Does what one statement says; false to end the session.
    fn statement(&mut self, statement: &str, out: &mut impl Write) -> std::io::Result<bool> {
        let result = match kind_of(statement) {
            Kind::Quit => return Ok(false),
            Kind::Help => Ok(HELP.to_string()),
            Kind::ShowTables => Ok(self.tables()),
            Kind::Declare => {
                let files = self.script(statement);
                let checked = eddy_sql::check_texts(files.clone(), &self.options(&files, None));
                checked
                    .map(|declared| {
                        self.kept.push(files.last().cloned().expect("just added"));
                        self.declared = declared;
                        "[OK]".to_string()
                    })
                    .map_err(|e| e.to_string())
            }
            Kind::Query => {
                let files = self.script(statement);
                let path = self
                    .work
                    .path()
                    .join(format!("result-{}.jsonl", self.count));
                self.run(files, Some(path.clone()))
                    .and_then(|(graph, note)| Ok(self.table(&graph, &path)? + &note))
            }
            Kind::Job => {
                let files = self.script(statement);
                self.run(files, None).map(|(graph, note)| {
                    let sinks: Vec<&str> = graph
                        .nodes
                        .iter()
                        .filter(|n| matches!(n.kind, NodeKind::Sink(_)))
                        .map(|n| n.name.as_str())
                        .collect();
                    format!(
                        "[OK] the job ran to its end; written: {}{note}",
                        sinks.join(", ")
                    )
                })
            }
            Kind::Explain => {
                let files = self.script(statement);
                let options = self.options(&files, None);
                eddy_sql::compile_texts(files, &options)
                    .map(|job| job.explained.join("\n"))
                    .map_err(|e| e.to_string())
            }
            Kind::Unknown => Err(format!(
                "error: `{}` is not a statement the shell knows\n  = help: type HELP for the list",
                first_words(statement)
            )),
        };
        match result {
            Ok(text) => writeln!(out, "{text}")?,
            Err(text) => writeln!(out, "{text}")?,
        }
        Ok(true)
    }

    /// The tables and views the session declared.
    fn tables(&self) -> String {
        if self.declared.is_empty() {
            "(no tables yet: CREATE TABLE ...)".into()
        } else {
            self.declared.join("\n")
        }
    }

    /// A SELECT's rows as a table, sorted (numbers as numbers), at most --max-rows of them.
    fn table(&self, graph: &eddy_runtime::graph::JobGraph, path: &Path) -> Result<String, String> {
        // The sink writing `path` (called `result`, unless a table took that name).
        let sink = graph
            .nodes
            .iter()
            .find(|n| match &n.kind {
                NodeKind::Sink(spec) => {
                    matches!(&spec.connector, SinkConnector::File { path: p } if Path::new(p) == path)
                }
                _ => false,
            })
            .ok_or("error: the plan has no result (a bug)")?;
        let input = &sink.inputs[0];
        let schema = &graph.nodes[input.from].outputs[input.port].schema;
        let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut rows: Vec<Vec<String>> = Vec::new();
        for line in text.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("error: a result row: {e}"))?;
            rows.push(
                names
                    .iter()
                    .map(|n| match &value[n] {
                        serde_json::Value::Null => "NULL".to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            );
        }
        // Numbers in numeric order, the rest as text.
        rows.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.total_cmp(&y),
                    _ => x.cmp(y),
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let total = rows.len();
        rows.truncate(self.args.max_rows);
        let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
        for row in &rows {
            for (w, v) in widths.iter_mut().zip(row) {
                *w = (*w).max(v.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let rule = format!(
            "+{}+",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("+")
        );
        let mut out = vec![rule.clone(), line(&names), rule.clone()];
        out.extend(rows.iter().map(|r| line(r)));
        out.push(rule);
        out.push(match total {
            n if n > rows.len() => format!("{n} rows ({} shown; see --max-rows)", rows.len()),
            1 => "1 row".into(),
            n => format!("{n} rows"),
        });
        Ok(out.join("\n"))
    }
}

const HELP: &str = "\
Statements end with `;`.
  CREATE TABLE / VIEW / FUNCTION ...   declare, for the rest of the session
  SET 'key' = 'value'                  parallelism.default, table.exec.state.ttl, ...
  SELECT ...                           run over the declared tables and print the result
  INSERT INTO t SELECT ...             run as a job (EXECUTE STATEMENT SET for several)
  EXPLAIN INSERT INTO ...              print the job a statement makes
  SHOW TABLES                          the declared tables and views
  QUIT                                 leave (also Ctrl-D)
docs/sql.md lists the SQL Eddy runs.";

pub(crate) fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let work = tempfile::Builder::new().prefix("eddy-sql-").tempdir()?;
    let scripts = args.scripts.clone();
    let mut session = Session {
        args,
        kept: Vec::new(),
        declared: Vec::new(),
        count: 0,
        work,
    };
    for path in &scripts {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        };
        let mut rest = text.clone();
        let statements = take_statements(&mut rest);
        if let Some(s) = statements.iter().find(|s| kind_of(s) != Kind::Declare) {
            eprintln!(
                "error: {}: `{}` is not a declaration or SET\n  = help: scripts given to `eddy sql` prepare the session; type queries and INSERTs at the prompt",
                path.display(),
                first_words(s)
            );
            return Ok(ExitCode::from(2));
        }
        let file = (path.display().to_string(), text);
        let mut files = session.kept.clone();
        files.push(file.clone());
        let options = session.options(&files, None);
        match eddy_sql::check_texts(files, &options) {
            Ok(declared) => session.declared = declared,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        }
        session.kept.push(file);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout();
    let mut buffer = String::new();
    let prompt = |out: &mut std::io::Stdout, more: bool| {
        if interactive {
            let _ = write!(out, "{}", if more { "    -> " } else { "eddy> " });
            let _ = out.flush();
        }
    };
    prompt(&mut out, false);
    for line in stdin.lock().lines() {
        let line = line?;
        buffer.push_str(&line);
        buffer.push('\n');
        // HELP and QUIT need no `;`.
        if buffer.trim().is_empty() || matches!(kind_of(buffer.trim()), Kind::Help | Kind::Quit) {
            let statement = std::mem::take(&mut buffer);
            if !statement.trim().is_empty() && !session.statement(statement.trim(), &mut out)? {
                return Ok(ExitCode::SUCCESS);
            }
            prompt(&mut out, false);
            continue;
        }
        for statement in take_statements(&mut buffer) {
            if !session.statement(&statement, &mut out)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
        prompt(&mut out, !buffer.trim().is_empty());
    }
    if !buffer.trim().is_empty() {
        eprintln!("error: the input ended inside a statement (a `;` is missing)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// The first words of a statement, for a message.
fn first_words(statement: &str) -> String {
    let words: Vec<&str> = without_leading_comments(statement)
        .split_whitespace()
        .take(4)
        .collect();
    words.join(" ").trim_end_matches(';').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        let mut buffer =
            "SELECT ';' FROM t; -- a comment; still\nSET 'a' = 'b;c';\n/* ; */ SELECT `x;y` FROM u"
                .to_string();
        let statements = take_statements(&mut buffer);
        assert_eq!(
            statements,
            [
                "SELECT ';' FROM t;",
                "-- a comment; still\nSET 'a' = 'b;c';"
            ]
        );
        assert_eq!(buffer, "\n/* ; */ SELECT `x;y` FROM u");
        assert_eq!(
            kind_of("-- a comment; still\nSET 'a' = 'b;c';"),
            Kind::Declare
        );
        assert_eq!(kind_of("/* x */ select 1;"), Kind::Query);
    }
}

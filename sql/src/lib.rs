//! Eddy's Flink SQL front end: a script of Flink SQL statements (CREATE TABLE, CREATE VIEW,
//! CREATE FUNCTION, SET, INSERT INTO, EXECUTE STATEMENT SET, EXPLAIN) becomes an Eddy job file,
//! which the job compiler then turns into the job graph as it does a hand-written one.
//!
//! Parsing uses `sqlparser` with a Flink dialect of our own (`dialect`) and a statement driver
//! for Flink's DDL (`script`); `plan` binds queries and writes the job (`emit`).
//! docs/sql.md lists what is supported.

mod dialect;
mod emit;
mod error;
mod expr;
mod plan;
mod script;

pub use error::SqlError;
pub use plan::{Settings, SinkDir};

use error::Sources;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the command line adds to a script.
#[derive(Clone, Debug, Default)]
pub struct SqlOptions {
    /// `--param NAME=VALUE`: fills `${NAME}` in the script's strings.
    pub params: BTreeMap<String, String>,
    /// `--sink-dir DIR`: every sink table's rows go to files in DIR instead.
    pub sink_dir: Option<SinkDir>,
    /// `--generate`: the Nexmark table reads the generator, so its path needs no value.
    pub generate: bool,
    /// Placeholders left for the cluster to fill (`eddy submit --secret-param`): the job file
    /// declares them secret, so their values are sealed and never shown.
    pub deferred: BTreeSet<String>,
    /// The `eddy sql` shell: a bare SELECT writes its rows as JSON lines to this file (a sink
    /// called `result`); without it, a SELECT outside INSERT INTO is an error.
    pub select_to: Option<PathBuf>,
}

/// A planned script.
#[derive(Clone, Debug)]
pub struct SqlJob {
    /// The job file, for `eddy_jobs::compile_str` (and for people: `eddy check --emit-toml`).
    pub toml: String,
    /// The job's name (the last file's stem).
    pub name: String,
    /// What the script's SET statements asked for.
    pub settings: Settings,
    /// The plans of the script's EXPLAIN statements, in order.
    pub explained: Vec<String>,
    /// How many INSERTs the job holds (0 for a script that only explains).
    pub sinks: usize,
    /// The tables and views the script declares, sorted (views by their lower-case name).
    pub declared: Vec<String>,
}

/// Whether `path` names a SQL script.
pub fn is_sql(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
}

/// Reads the files of a script, in order, and plans it.
pub fn compile_files(paths: &[PathBuf], options: &SqlOptions) -> Result<SqlJob, SqlError> {
    let mut files = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SqlError::general(format!("cannot read {}: {e}", path.display()))
                .help("check the path; SQL scripts end in .sql")
        })?;
        files.push((path.display().to_string(), text));
    }
    compile_texts(files, options)
}

/// What `--generate` puts where a placeholder has no value (the Nexmark table's path).
pub(crate) const GENERATED: &str = "<generated>";

/// The stack of the thread that plans a script: parsing and planning recurse over the query.
pub(crate) const STACK: usize = 16 << 20;

/// Plans a script given as `(name, text)` files, read in order.
pub fn compile_texts(
    files: Vec<(String, String)>,
    options: &SqlOptions,
) -> Result<SqlJob, SqlError> {
    plan_on_big_stack(files, options, false)
}

/// Checks a script that may insert into nothing yet (declarations and settings, as the
/// `eddy sql` shell collects them): the errors [`compile_texts`] would give, but for that one.
/// The tables and views it declares.
pub fn check_texts(
    files: Vec<(String, String)>,
    options: &SqlOptions,
) -> Result<Vec<String>, SqlError> {
    plan_on_big_stack(files, options, true).map(|job| job.declared)
}

fn plan_on_big_stack(
    files: Vec<(String, String)>,
    options: &SqlOptions,
    allow_empty: bool,
) -> Result<SqlJob, SqlError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sql-planner".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || plan_texts(files, options, allow_empty))
            .map_err(|e| SqlError::general(format!("cannot start the SQL planner: {e}")))?
            .join()
            // A panic is a bug: it goes on as if planning had run on this thread.
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn plan_texts(
    files: Vec<(String, String)>,
    options: &SqlOptions,
    allow_empty: bool,
) -> Result<SqlJob, SqlError> {
    let name = files
        .last()
        .map(|(f, _)| {
            Path::new(f)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sql".into());
    let sources = Sources::new(files);
    let placeholder = options.generate.then_some(GENERATED);
    let statements = script::parse(&sources, &options.params, &options.deferred, placeholder)?;
    let mut planner = plan::Planner::new(&sources, options.sink_dir.clone(), &name);
    planner.emitter.secret_params(&options.deferred);
    planner.select_to = options.select_to.clone();
    for statement in &statements {
        planner.statement(statement)?;
    }
    if planner.sinks == 0 && planner.explained.is_empty() && !allow_empty {
        return Err(SqlError::general(
            "the script inserts into no table, so there is nothing to run",
        )
        .help("add INSERT INTO <table> SELECT ..."));
    }
    let declared = planner.declared();
    Ok(SqlJob {
        toml: planner.emitter.text(),
        name,
        settings: planner.settings,
        explained: planner.explained,
        sinks: planner.sinks,
        declared,
    })
}

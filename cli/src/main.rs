//! The `eddy` command. Each subcommand is one call into a library crate; this file only parses
//! arguments, reports results and maps failures to exit codes (2: bad job or arguments,
//! 1: the job failed while running).

mod certs;
mod chaos;
mod cluster;
mod gen;
mod http;
mod serve;
mod shell;
mod warehouse;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy_jobs::{compile_str, CompileOptions};
use eddy_operators::checkpointing::{check_fits, Restored, RocksOptions, StateBackendChoice};
use eddy_operators::{Factory, RunSettings};
use eddy_runtime::checkpoint::storage::DirStorage;
use eddy_runtime::checkpoint::{CheckpointMetadata, CheckpointStore};
use eddy_runtime::dirlock::DirLock;
use eddy_runtime::exec::{
    commit_checkpoint, execute, CancelHandle, CheckpointSettings, ExecOptions,
};
use eddy_runtime::graph::{GeneratorSpec, JobGraph, NodeKind, SinkConnector};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Rows, keys and state entries are many small allocations freed on other threads than the ones
/// that made them; mimalloc handles that pattern much better than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Eddy: a stream processor. Runs jobs (graphs of sources, keyed and windowed operators and sinks)
/// written as TOML job files; see docs/job-format.md.
#[derive(Parser)]
#[command(name = "eddy", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on the embedded local runtime: read its input to the end, flush every window,
    /// write the result and exit.
    Run(RunArgs),
    /// Check a job file or SQL script and print its plan (nodes, parallelism, partitioning)
    /// without running it.
    Check(CheckArgs),
    /// Run a coordinator: one node of the Raft group that stores jobs and schedules them.
    Coordinator(cluster::CoordinatorArgs),
    /// Run a worker: registers with the coordinators and runs the tasks they deploy.
    Worker(cluster::WorkerArgs),
    /// Start a whole cluster on loopback in this process: three coordinators and N workers.
    Local(cluster::LocalArgs),
    /// Submit a job to the cluster; prints its id.
    Submit(cluster::SubmitArgs),
    /// List the cluster's jobs.
    List(cluster::ClientArgs),
    /// Show a job's state, tasks, last checkpoint, records in/out and the Raft leader.
    Status(cluster::StatusArgs),
    /// Cancel a job.
    Cancel(cluster::JobIdArgs),
    /// Write a savepoint of a running job (and optionally stop it).
    Savepoint(cluster::SavepointArgs),
    /// List the live workers, one per line.
    Workers(cluster::ClientArgs),
    /// Generate realistic traffic (and its exact expected results) for the example jobs.
    #[command(subcommand)]
    Gen(gen::GenCommand),
    /// Serve the event ingest API (validated events into Kafka) and the live dashboard.
    Serve(serve::ServeArgs),
    /// Make, revoke and list the API keys of `eddy serve` (producers and dashboard viewers).
    #[command(subcommand)]
    ApiKey(serve::ApiKeyCommand),
    /// Set up the e-commerce warehouse in PostgreSQL.
    #[command(subcommand)]
    Warehouse(warehouse::WarehouseCommand),
    /// Make, revoke and list the bearer tokens of the client API.
    #[command(subcommand)]
    Token(cluster::TokenCommand),
    /// Show the audit log: who changed what on the cluster, when, with what result.
    Audit(cluster::AuditArgs),
    /// Make the cluster's CA and the certificates of its nodes and clients (mutual TLS).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// A Flink SQL shell: declare tables, run SELECTs and print their results, run INSERTs
    /// as jobs, on the embedded runtime (statements from standard input, each ended by `;`).
    Sql(shell::SqlArgs),
    /// Start a cluster on loopback, inject seeded faults (kills, pauses, partitions, disk and
    /// dependency failures) while it runs a job, and check that nothing was lost or duplicated.
    Chaos(chaos::ChaosArgs),
}

#[derive(Args, Clone)]
pub(crate) struct JobArgs {
    /// The job: a job file (TOML, e.g. jobs/nexmark/q5.toml), or Flink SQL scripts read in
    /// order as one (e.g. ddl.sql q5.sql).
    #[arg(required = true, num_args = 1.., value_name = "JOB")]
    pub(crate) jobs: Vec<PathBuf>,
    /// SQL: write the rows of every sink table T, whatever its connector, as JSON lines to
    /// DIR/T.jsonl (part files under DIR/T/ when the run takes checkpoints).
    #[arg(long, value_name = "DIR")]
    pub(crate) sink_dir: Option<PathBuf>,
    /// Fill a `${NAME}` placeholder of the job file; repeat for several (--param input=events.jsonl.gz).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub(crate) params: Vec<(String, String)>,
    /// Run every node with N parallel subtasks (threads) instead of the job's default parallelism.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) parallelism: Option<u32>,
    /// Replace the job's Nexmark file sources with the built-in Nexmark generator making N events
    /// (the settings of the shared benchmark data); the `input` parameter is then not needed.
    #[arg(long, value_name = "N")]
    pub(crate) generate: Option<u64>,
    /// Event rate of --generate, in events per second of event time.
    #[arg(
        long,
        value_name = "EVENTS_PER_SEC",
        default_value_t = 1000,
        requires = "generate"
    )]
    pub(crate) rate: u64,
    /// Reprocess history: each Kafka source reads its topic from DIR/<topic>.jsonl (or .jsonl.gz,
    /// or a directory DIR/<topic>/) instead, as a bounded run, e.g. what `eddy gen ecommerce --to
    /// file:DIR` wrote.
    #[arg(long, value_name = "DIR")]
    pub(crate) topics_from: Option<PathBuf>,
    /// Read at most N records of each source's input per second (wall clock), records the job
    /// drops included: replays recorded input at a live pace, e.g. for a demo or to watch a job
    /// under load.
    #[arg(long, value_name = "ROWS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_rate: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Where malformed input lines go, with their line number and the reason (created on the
    /// first one).
    #[arg(long, value_name = "FILE", default_value = "dead-letter.jsonl")]
    dead_letter: PathBuf,
    /// Rows per batch between tasks.
    #[arg(long, value_name = "ROWS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
    /// Print only errors.
    #[arg(long, short)]
    quiet: bool,
    /// Refuse to run unless every file the job reads or writes (inputs, outputs, checkpoints,
    /// savepoints, dead letters) lies under one of these directories once `..` and links are
    /// resolved (repeat for several); for a job file you did not write. Default: no limit.
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
}

/// Fault tolerance: checkpoints, savepoints and where keyed state lives.
#[derive(Args)]
struct CheckpointArgs {
    /// Take checkpoints into DIR; if DIR already holds a completed checkpoint of this job, resume
    /// from the latest one (the committed output then holds exactly the rows of an uninterrupted
    /// run, for rows within the watermark delay: see docs/checkpointing.md).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Time between checkpoints (e.g. 500ms, 1s, 1min).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    checkpoint_interval: Duration,
    /// Completed checkpoints to keep in --checkpoint-dir; older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    retain_checkpoints: u32,
    /// On Ctrl-C or SIGTERM, write a savepoint into DIR before stopping (needs --checkpoint-dir).
    #[arg(long, value_name = "DIR", requires = "checkpoint_dir")]
    savepoint_dir: Option<PathBuf>,
    /// Start from the latest savepoint in DIR, unless --checkpoint-dir holds a newer checkpoint
    /// (ids grow over runs, so the newest state always wins).
    #[arg(long, value_name = "DIR", requires = "checkpoint_dir")]
    from_savepoint: Option<PathBuf>,
    /// Where keyed operators keep state: `rocksdb` (the default with --checkpoint-dir) or
    /// `memory` (the default without; fastest, cannot checkpoint).
    #[arg(long, value_name = "BACKEND", value_parser = ["memory", "rocksdb"])]
    state_backend: Option<String>,
    /// Local working directory of RocksDB state (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// RocksDB block cache shared by all operators, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    state_cache_mb: u64,
    /// Decoded state entries each state keeps in memory before writing back to RocksDB.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    state_cache_entries: u64,
}

pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    match eddy_runtime::types::parse_duration(text) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        _ => Err(format!(
            "`{text}` is not a positive duration (e.g. 500ms, 1s, 1min)"
        )),
    }
}

pub(crate) fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "`{text}` is not NAME=VALUE (e.g. --param input=events.jsonl.gz)"
        )),
    }
}

/// A job that cannot be compiled: exit code 2, with the compiler's message as is.
pub(crate) struct BadJob(pub(crate) String);

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    job: JobArgs,
    /// SQL: print the job file the script was planned into.
    #[arg(long)]
    emit_toml: bool,
}

/// A job as the compiler takes it: a job file, or the job file a SQL script was planned into.
pub(crate) struct JobSource {
    /// The file (or files, for a script) it came from, for messages.
    pub(crate) path: String,
    /// Job-file text.
    pub(crate) text: String,
    /// The `--param` values the text still needs (a script's are filled when it is planned).
    pub(crate) params: std::collections::BTreeMap<String, String>,
    /// What planning a script also gave: its SET options and EXPLAIN plans.
    pub(crate) sql: Option<eddy_sql::SqlJob>,
}

/// Reads the job of `args`: one job file, or SQL scripts planned into one. `parts`: the run
/// takes checkpoints, so `--sink-dir` gets part files. `deferred`: parameters a cluster fills
/// (sealed secrets), left as placeholders.
pub(crate) fn read_job(
    args: &JobArgs,
    parts: bool,
    deferred: &[String],
) -> Result<JobSource, BadJob> {
    let params: std::collections::BTreeMap<String, String> = args.params.iter().cloned().collect();
    if args.jobs.iter().all(|p| eddy_sql::is_sql(p)) {
        let options = eddy_sql::SqlOptions {
            params,
            sink_dir: args.sink_dir.as_ref().map(|dir| eddy_sql::SinkDir {
                dir: dir.clone(),
                parts,
            }),
            generate: args.generate.is_some(),
            deferred: deferred.iter().cloned().collect(),
            select_to: None,
        };
        let job =
            eddy_sql::compile_files(&args.jobs, &options).map_err(|e| BadJob(e.to_string()))?;
        let path = args
            .jobs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        return Ok(JobSource {
            path,
            text: job.toml.clone(),
            params: Default::default(),
            sql: Some(job),
        });
    }
    let [job] = args.jobs.as_slice() else {
        return Err(BadJob(
            "error: give one job file (.toml) or one or more SQL scripts (.sql), read in order"
                .into(),
        ));
    };
    if args.sink_dir.is_some() {
        return Err(BadJob(
            "error: --sink-dir is for SQL scripts; a job file names its sinks' paths itself".into(),
        ));
    }
    let text = std::fs::read_to_string(job).map_err(|e| {
        BadJob(format!(
            "error: cannot read the job file `{}`: {e}\n  = help: check the path; job files are TOML, e.g. jobs/nexmark/q5.toml",
            job.display()
        ))
    })?;
    Ok(JobSource {
        path: job.display().to_string(),
        text,
        params,
        sql: None,
    })
}

/// Prints the plans of a script's EXPLAIN statements, and what its SET options did.
fn print_sql_notes(source: &JobSource) {
    let Some(sql) = &source.sql else { return };
    for plan in &sql.explained {
        println!("{plan}");
    }
    for (key, why) in &sql.settings.ignored {
        eprintln!("note: SET '{key}' is ignored: {why}");
    }
}

/// Compiles the job of `args` read into `source`.
/// What `--generate N --rate R` puts in place of the Nexmark file sources.
pub(crate) fn generator(events: u64, rate: u64) -> GeneratorSpec {
    GeneratorSpec {
        events: Some(events),
        rate,
        base_time: eddy_jobs::DEFAULT_NEXMARK_BASE_TIME,
        throttle: false,
    }
}

fn compile(args: &JobArgs, source: &JobSource) -> Result<JobGraph, BadJob> {
    let sql_parallelism = source.sql.as_ref().and_then(|s| s.settings.parallelism);
    let options = CompileOptions {
        params: source.params.clone(),
        parallelism: args.parallelism.or(sql_parallelism),
        generate: args.generate.map(|events| generator(events, args.rate)),
        topic_files: args.topics_from.clone(),
    };
    let graph =
        compile_str(&source.path, &source.text, &options).map_err(|e| match &source.sql {
            None => BadJob(e.to_string()),
            Some(_) => BadJob(format!(
                "{e}\n(in the job planned from the SQL script; `eddy check --emit-toml` shows it)"
            )),
        })?;
    Ok(graph)
}

/// Reads and compiles the job of `args`; `None` when it is a script that only explains.
fn load(args: &JobArgs, parts: bool) -> Result<(Option<JobGraph>, JobSource), BadJob> {
    let source = read_job(args, parts, &[])?;
    print_sql_notes(&source);
    if source.sql.as_ref().is_some_and(|s| s.sinks == 0) {
        return Ok((None, source));
    }
    Ok((Some(compile(args, &source)?), source))
}

/// A run that cannot start: exit code 2, with this message.
struct BadRun(String);

/// Opens checkpoint storage in a directory.
fn open_store(dir: &Path) -> Result<CheckpointStore, BadRun> {
    let storage = DirStorage::new(dir).map_err(|e| {
        BadRun(format!(
            "error: cannot use checkpoint directory `{}`: {e}",
            dir.display()
        ))
    })?;
    Ok(CheckpointStore::new(Arc::new(storage)))
}

/// The latest completed checkpoint in a store, with a message that says what to do if it is
/// unreadable.
fn latest(store: &CheckpointStore, what: &str) -> Result<Option<CheckpointMetadata>, BadRun> {
    store.latest().map_err(|e| {
        BadRun(format!(
            "error: cannot restore from the {what}: {e}\n(remove the damaged chk-* directory to fall back to an earlier one: output committed after that one is produced again; or start over with an empty directory)"
        ))
    })
}

/// The state backend, restore point and checkpoint settings of a run.
struct Plan {
    settings: RunSettings,
    checkpointing: Option<CheckpointSettings>,
    /// Keeps a temporary state directory alive for the run.
    _temp: Option<tempfile::TempDir>,
    /// The checkpoint, state and output directories this run uses, locked against another
    /// run using them at the same time.
    _locks: Vec<DirLock>,
    /// The run resumes a job that had already finished: nothing to do but re-commit.
    finished: Option<Arc<CheckpointMetadata>>,
}

/// Locks every directory the run writes: its checkpoints, its keyed state and the part-file
/// directories of its sinks.
fn lock_directories(args: &RunArgs, graph: &JobGraph) -> Result<Vec<DirLock>, BadRun> {
    let c = &args.checkpoints;
    let mut dirs: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(d) = &c.checkpoint_dir {
        dirs.push((d.clone(), "checkpoint directory"));
    }
    if let Some(d) = &c.state_dir {
        dirs.push((d.clone(), "state directory"));
    }
    for node in &graph.nodes {
        if let NodeKind::Sink(spec) = &node.kind {
            if let SinkConnector::File { path } = &spec.connector {
                if eddy_operators::sink_is_directory(&spec.connector) {
                    dirs.push((PathBuf::from(path), "output directory"));
                }
            }
        }
    }
    let mut locks: Vec<DirLock> = Vec::new();
    for (dir, what) in dirs {
        // Two sinks may share a directory: this run holds it once.
        let canonical = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        if locks
            .iter()
            .any(|l| std::fs::canonicalize(l.dir()).ok().as_ref() == Some(&canonical))
        {
            continue;
        }
        locks.push(DirLock::acquire(&dir, what).map_err(|e| BadRun(format!("error: {e}")))?);
    }
    Ok(locks)
}

/// Temporary state directories of `eddy run` start with this.
const TEMP_STATE_PREFIX: &str = "eddy-state-";

/// Deletes the temporary state directories of runs that ended without cleaning up (killed):
/// each run locks its own, so one that can be locked belongs to no live run.
fn remove_abandoned_state_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEMP_STATE_PREFIX));
        if ours && path.is_dir() && path.join(eddy_runtime::dirlock::LOCK_FILE).exists() {
            if let Ok(lock) = DirLock::acquire(&path, "state directory") {
                tracing::info!(dir = %path.display(), "removing the state of a run that was killed");
                let _ = std::fs::remove_dir_all(&path);
                drop(lock);
            }
        }
    }
}

/// With --allow-path, checks every path the run would read or write.
fn confine(args: &RunArgs, graph: &JobGraph) -> Result<(), String> {
    if args.allow_path.is_empty() {
        return Ok(());
    }
    let allowed = eddy_security::paths::AllowedPaths::new(&args.allow_path)
        .map_err(|e| format!("--allow-path: {e}"))?;
    let c = &args.checkpoints;
    let mut paths = graph.file_paths();
    for (what, path) in [
        ("--dead-letter", Some(&args.dead_letter)),
        ("--checkpoint-dir", c.checkpoint_dir.as_ref()),
        ("--savepoint-dir", c.savepoint_dir.as_ref()),
        ("--from-savepoint", c.from_savepoint.as_ref()),
        ("--state-dir", c.state_dir.as_ref()),
        ("--topics-from", args.job.topics_from.as_ref()),
    ] {
        if let Some(path) = path {
            paths.push((what.to_string(), path.display().to_string()));
        }
    }
    for (what, path) in paths {
        allowed.check(&what, &path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn plan(args: &RunArgs, graph: &JobGraph) -> Result<Plan, BadRun> {
    let mut locks = lock_directories(args, graph)?;
    let c = &args.checkpoints;
    let rocksdb = match c.state_backend.as_deref() {
        Some("memory") if c.checkpoint_dir.is_some() => {
            return Err(BadRun(
                "error: --state-backend memory cannot checkpoint; drop it (RocksDB is the default with --checkpoint-dir) or drop --checkpoint-dir".into(),
            ))
        }
        Some("memory") => false,
        Some(_) => true,
        None => c.checkpoint_dir.is_some(),
    };
    let mut settings = RunSettings {
        dead_letter_path: args.dead_letter.clone(),
        exactly_once: c.checkpoint_dir.is_some(),
        ..Default::default()
    };
    let mut temp = None;
    let mut temp_lock = None;
    if rocksdb {
        let dir = match &c.state_dir {
            Some(d) => d.clone(),
            None => {
                remove_abandoned_state_dirs();
                let t = tempfile::Builder::new()
                    .prefix(TEMP_STATE_PREFIX)
                    .tempdir()
                    .map_err(|e| BadRun(format!("error: cannot create a state directory: {e}")))?;
                let path = t.path().to_path_buf();
                temp_lock = Some(
                    DirLock::acquire(&path, "state directory")
                        .map_err(|e| BadRun(format!("error: {e}")))?,
                );
                temp = Some(t);
                path
            }
        };
        let options = RocksOptions::new(
            (c.state_cache_mb as usize) << 20,
            c.state_cache_entries as usize,
        )
        .map_err(|e| BadRun(format!("error: {e}")))?;
        settings.state = StateBackendChoice::RocksDb { dir, options };
    }
    locks.extend(temp_lock);
    let Some(dir) = &c.checkpoint_dir else {
        return Ok(Plan {
            settings,
            checkpointing: None,
            _temp: temp,
            _locks: locks,
            finished: None,
        });
    };
    let store = open_store(dir)?;
    // The newest of: the latest checkpoint, a savepoint a stop recorded next to the checkpoints,
    // and --from-savepoint. Checkpoint ids continue over runs, so the highest id is the newest
    // state; resuming anything older would publish again what a newer one published.
    let mut candidates = Vec::new();
    if let Some(m) = latest(&store, &format!("checkpoint directory `{}`", dir.display()))? {
        candidates.push(Restored {
            store: store.clone(),
            metadata: Arc::new(m),
            incremental_base: true,
        });
    }
    let recorded = store
        .recorded_savepoint()
        .map_err(|e| BadRun(format!("error: {e}")))?;
    let mut savepoints: Vec<PathBuf> = recorded
        .into_iter()
        .map(|p| PathBuf::from(p.location))
        .collect();
    savepoints.extend(c.from_savepoint.iter().cloned());
    for sp in savepoints {
        if !sp.is_dir() {
            return Err(BadRun(format!(
                "error: savepoint directory `{}` does not exist (check --from-savepoint, or remove `_savepoint` from the checkpoint directory)",
                sp.display()
            )));
        }
        let sp_store = open_store(&sp)?;
        match latest(
            &sp_store,
            &format!("savepoint directory `{}`", sp.display()),
        )? {
            Some(m) => candidates.push(Restored {
                store: sp_store,
                metadata: Arc::new(m),
                incremental_base: false,
            }),
            None => {
                return Err(BadRun(format!(
                    "error: `{}` holds no completed savepoint (check --from-savepoint)",
                    sp.display()
                )))
            }
        }
    }
    let restored = candidates.into_iter().max_by_key(|r| r.metadata.checkpoint);
    let mut finished = None;
    // Above every id this directory ever completed or reserved: a run restored from an older
    // checkpoint (the newest removed as damaged, or lost) never reuses an id whose output may
    // already be committed.
    let mut first_id = store.next_id().map_err(|e| BadRun(format!("error: {e}")))?;
    if let Some(r) = &restored {
        if r.metadata.job != graph.name {
            return Err(BadRun(format!(
                "error: checkpoint {} in `{}` belongs to job `{}`, not `{}`; use another --checkpoint-dir",
                r.metadata.checkpoint,
                r.store.storage().describe(),
                r.metadata.job,
                graph.name
            )));
        }
        check_fits(graph, &r.metadata).map_err(|e| BadRun(format!("error: {e}")))?;
        first_id = first_id.max(r.metadata.checkpoint + 1);
        if r.metadata.finished {
            finished = Some(Arc::clone(&r.metadata));
        }
    }
    // Checkpoints that never completed and files nothing refers to are left over from a crash.
    store
        .prune(c.retain_checkpoints as usize)
        .map_err(|e| BadRun(format!("error: {e}")))?;
    let savepoint_on_stop = match &c.savepoint_dir {
        Some(d) => Some(open_store(d)?),
        None => None,
    };
    settings.restore = restored;
    Ok(Plan {
        settings,
        checkpointing: Some(CheckpointSettings {
            store,
            interval: c.checkpoint_interval,
            retain: c.retain_checkpoints as usize,
            first_id,
            limits: Default::default(),
            savepoint_on_stop,
        }),
        _temp: temp,
        _locks: locks,
        finished,
    })
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (graph, source) = match load(&args.job, args.checkpoints.checkpoint_dir.is_some()) {
        Ok((Some(g), source)) => (g, source),
        Ok((None, _)) => return Ok(ExitCode::SUCCESS),
        Err(BadJob(message)) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(sql) = &source.sql {
        if sql.settings.checkpoint_interval_ms.is_some() {
            eprintln!("note: SET 'execution.checkpointing.interval' applies to `eddy submit`; `eddy run` checkpoints with --checkpoint-dir and --checkpoint-interval");
        }
    }
    if let Err(message) = confine(&args, &graph) {
        eprintln!("error: {message}");
        return Ok(ExitCode::from(2));
    }
    let plan = match plan(&args, &graph) {
        Ok(p) => p,
        Err(BadRun(message)) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    let factory = Factory::new(plan.settings.clone());
    if let Some(r) = &plan.settings.restore {
        // The previous run may have died between completing this checkpoint and committing it.
        commit_checkpoint(&factory, &graph, &r.metadata, &r.store)?;
        if !args.quiet {
            eprintln!(
                "{}: resuming from checkpoint {} in {}",
                graph.name,
                r.metadata.checkpoint,
                r.store.storage().describe()
            );
        }
    }
    if let Some(done) = &plan.finished {
        if !args.quiet {
            eprintln!(
                "{}: already finished (checkpoint {}); its output is committed",
                graph.name, done.checkpoint
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = ExecOptions {
        batch_size: args.batch_size as usize,
        checkpointing: plan.checkpointing.clone(),
        max_source_rate: args.job.max_rate,
        ..ExecOptions::default()
    };
    let cancel = CancelHandle::default();
    {
        // First Ctrl-C or SIGTERM: stop (after a savepoint, if asked for); second: exit now.
        let cancel = cancel.clone();
        let savepoint = args.checkpoints.savepoint_dir.is_some();
        let _ = ctrlc::set_handler(move || {
            if cancel.stop_requested() || cancel.is_cancelled() {
                std::process::exit(130);
            }
            cancel.request_stop();
            if !savepoint {
                cancel.cancel();
            }
        });
    }
    let stats = execute(&graph, &factory, &options, &cancel)
        .with_context(|| format!("job `{}` failed", graph.name))?;
    if stats.stopped {
        match stats.checkpoints.iter().rev().find(|c| c.savepoint) {
            Some(sp) => eprintln!(
                "{}: stopped with savepoint {} in {} (resume with --from-savepoint)",
                graph.name, sp.id, sp.location
            ),
            None => eprintln!("{}: stopped", graph.name),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.quiet {
        let read: u64 = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Source(_)))
            .filter_map(|n| stats.node(&n.name))
            .map(|s| s.records_out)
            .sum();
        let secs = stats.elapsed.as_secs_f64();
        eprintln!(
            "{}: {} rows read from the sources in {:.2} s ({:.0} rows/s)",
            graph.name,
            read,
            secs,
            read as f64 / secs.max(1e-9)
        );
        for node in &graph.nodes {
            if let NodeKind::Sink(spec) = &node.kind {
                let rows = stats.node(&node.name).map_or(0, |s| s.records_in);
                let place = match &spec.connector {
                    SinkConnector::File { path } => format!("written to {path}"),
                    SinkConnector::Stdout => "printed".into(),
                    SinkConnector::Blackhole => "discarded".into(),
                    SinkConnector::Postgres { table, .. } => {
                        format!("in PostgreSQL table {table}")
                    }
                };
                eprintln!("sink `{}`: {rows} changes in, result {place}", node.name);
            }
        }
        let regular: Vec<_> = stats.checkpoints.iter().filter(|c| !c.finished).collect();
        if let Some(last) = regular.last() {
            eprintln!(
                "{} checkpoints completed (last: {}, took {} ms) in {}",
                regular.len(),
                last.id,
                last.duration.as_millis(),
                last.location
            );
        }
        let dead = factory.dead_letter_count();
        if dead > 0 {
            eprintln!(
                "{dead} malformed input lines went to {} (with line numbers and reasons)",
                args.dead_letter.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> ExitCode {
    if args.emit_toml {
        // The job file as planned, even when it does not compile: that is when it helps.
        return match read_job(&args.job, false, &[]) {
            Ok(source) => {
                println!("{}", source.text);
                ExitCode::SUCCESS
            }
            Err(BadJob(message)) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        };
    }
    let graph = match load(&args.job, false) {
        Ok((Some(g), _)) => g,
        Ok((None, _)) => return ExitCode::SUCCESS,
        Err(BadJob(message)) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    println!(
        "job `{}` (max parallelism {})",
        graph.name, graph.max_parallelism
    );
    for node in &graph.nodes {
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|e| {
                let from = &graph.nodes[e.from];
                let port = &from.outputs[e.port].name;
                let name = if port.is_empty() {
                    from.name.clone()
                } else {
                    format!("{}.{port}", from.name)
                };
                format!("{name} ({:?})", e.partitioning)
            })
            .collect();
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .map(|p| {
                let cols: Vec<String> = p
                    .schema
                    .fields
                    .iter()
                    .map(|f| format!("{} {}", f.name, f.data_type))
                    .collect();
                format!(
                    "{}[{}]{}",
                    if p.name.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", p.name)
                    },
                    cols.join(", "),
                    if p.updating { " (updating)" } else { "" }
                )
            })
            .collect();
        println!(
            "  {} `{}` x{} <- {}",
            node.kind.type_name(),
            node.name,
            node.parallelism,
            if inputs.is_empty() {
                "-".into()
            } else {
                inputs.join(", ")
            }
        );
        for o in outputs {
            println!("      -> {o}");
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Check(args) => check(args),
        Command::Coordinator(args) => report(cluster::coordinator(args)),
        Command::Worker(args) => report(cluster::worker(args)),
        Command::Local(args) => report(cluster::local(args)),
        Command::Submit(args) => report(cluster::submit(args)),
        Command::List(args) => report(cluster::list(args)),
        Command::Status(args) => report(cluster::status(args)),
        Command::Cancel(args) => report(cluster::cancel(args)),
        Command::Savepoint(args) => report(cluster::savepoint(args)),
        Command::Workers(args) => report(cluster::workers(args)),
        Command::Gen(command) => report(gen::gen(command)),
        Command::Warehouse(command) => report(warehouse::warehouse(command)),
        Command::Serve(args) => report(serve::serve(args)),
        Command::ApiKey(command) => report(serve::api_key(command)),
        Command::Chaos(args) => report(chaos::chaos(args)),
        Command::Sql(args) => report(shell::run(args)),
        Command::Certs(command) => report(certs::certs(command)),
        Command::Token(command) => report(cluster::token(command)),
        Command::Audit(args) => report(cluster::audit(args)),
    }
}

/// Maps a command's failure to a one-line error and exit code 1.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

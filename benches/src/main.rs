//! `eddy-bench`: events/s and events/s per core of the Nexmark jobs, on the built-in generator
//! or on a JSON-lines file, with the same columns as Flink's `shared/flink/bench.sh` so that
//! `benches/flink-vs-eddy.sh` can put the two side by side. Also writes generated event files
//! (`--write-events`) for both engines to read. See docs/benchmarks.md.

use anyhow::{bail, Context};
use clap::Parser;
use eddy_benches::{count_events, median, run_job, write_events, Input, Measurement};
use eddy_runtime::exec::ExecOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The allocator of the `eddy` binary, so that the figures are those of `eddy run`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Queries without state (or with constant state): they get more events by default, so that a
/// run lasts long enough to measure.
const STATELESS: [&str; 6] = ["q0", "q1", "q2", "q14", "q21", "q22"];
/// Default generated events for the stateless queries.
const STATELESS_EVENTS: u64 = 10_000_000;
/// Default generated events for the others (joins, windows, top-N keep state and are slower).
const STATEFUL_EVENTS: u64 = 5_000_000;

/// Times Nexmark jobs on Eddy's local runtime into blackhole sinks and prints one row per query
/// and parallelism (medians over the runs).
#[derive(Parser)]
#[command(name = "eddy-bench")]
struct Args {
    /// Queries to run: names of jobs/nexmark/*.toml (q5) or paths of job files. All Nexmark jobs
    /// when none is given.
    queries: Vec<String>,
    /// Parallelisms to run each query with (every node gets this many subtasks).
    #[arg(long, short, value_delimiter = ',', default_value = "1,2")]
    parallelism: Vec<u32>,
    /// Generated events per run [default: 10,000,000 for the stateless q0, q1, q2, q14, q21,
    /// q22; 5,000,000 for the others].
    #[arg(long, short = 'n', conflicts_with = "file")]
    events: Option<u64>,
    /// Read this JSON-lines file (or directory of files, .gz too) instead of generating events.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Runs per query and parallelism; the table shows the medians.
    #[arg(long, short, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Rows per batch between tasks.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
    /// Where the job files of query names are.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/nexmark"))]
    jobs_dir: PathBuf,
    /// Also print each run's record counts per node (to stderr).
    #[arg(long)]
    node_stats: bool,
    /// Instead of benchmarking, write this many generated events as JSON lines to --out, in the
    /// shared data's exact format (base time 2026-01-01, 1000 events/s), and exit.
    #[arg(long, value_name = "N", requires = "out")]
    write_events: Option<u64>,
    /// The file --write-events writes.
    #[arg(long, value_name = "FILE", requires = "write_events")]
    out: Option<PathBuf>,
}

/// A job to run: the name shown in the table and its file.
struct Job {
    name: String,
    path: PathBuf,
}

fn jobs(args: &Args) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    if args.queries.is_empty() {
        let dir = &args.jobs_dir;
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list `{}`", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                jobs.push(job_of(path));
            }
        }
        // q2 before q11: by the number in the name.
        jobs.sort_by_key(|j| {
            (
                j.name
                    .trim_start_matches('q')
                    .parse::<u32>()
                    .unwrap_or(u32::MAX),
                j.name.clone(),
            )
        });
    } else {
        for query in &args.queries {
            let named = args.jobs_dir.join(format!("{query}.toml"));
            let path = if named.is_file() {
                named
            } else {
                PathBuf::from(query)
            };
            if !path.is_file() {
                bail!(
                    "no job `{query}`: neither {} nor a job file",
                    args.jobs_dir.join(format!("{query}.toml")).display()
                );
            }
            jobs.push(job_of(path));
        }
    }
    Ok(jobs)
}

fn job_of(path: PathBuf) -> Job {
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Job { name, path }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(events), Some(out)) = (args.write_events, &args.out) {
        write_events(events, out)?;
        eprintln!("wrote {events} events to {}", out.display());
        return Ok(());
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; build with --release for meaningful figures");
    }
    let jobs = jobs(&args)?;
    let file_input = match &args.file {
        Some(path) => {
            let events = count_events(path)?;
            Some(Input::File {
                path: path.clone(),
                events,
            })
        }
        None => None,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match &file_input {
        Some(input) => println!(
            "# eddy-bench on {cores} cores: file {} ({} events), {} run(s), blackhole sinks, no checkpoints",
            args.file.as_deref().unwrap_or(Path::new("")).display(),
            input.events(),
            args.runs
        ),
        None => println!(
            "# eddy-bench on {cores} cores: generator, {}, {} run(s), blackhole sinks, no checkpoints",
            match args.events {
                Some(n) => format!("{n} events"),
                None => format!(
                    "{STATELESS_EVENTS} events for {} and {STATEFUL_EVENTS} for the others",
                    STATELESS.join("/")
                ),
            },
            args.runs
        ),
    }
    let options = ExecOptions {
        batch_size: args.batch_size as usize,
        ..ExecOptions::default()
    };

    let mut rows = Vec::new();
    for &p in &args.parallelism {
        for job in &jobs {
            let input = file_input.clone().unwrap_or_else(|| Input::Generator {
                events: args
                    .events
                    .unwrap_or(if STATELESS.contains(&job.name.as_str()) {
                        STATELESS_EVENTS
                    } else {
                        STATEFUL_EVENTS
                    }),
            });
            let mut runs = Vec::new();
            for run in 1..=args.runs {
                let m = run_job(&job.path, &input, p, &options)
                    .with_context(|| format!("{} p={p} run {run}", job.name))?;
                eprintln!(
                    "{} p={p} run {run}: {} events in {:.2} s, cpu {:.2} s, others {:.2} s",
                    job.name,
                    m.events,
                    m.wall.as_secs_f64(),
                    m.cpu.as_secs_f64(),
                    m.other_cpu.as_secs_f64()
                );
                if args.node_stats {
                    for node in &m.stats.nodes {
                        eprintln!(
                            "    {:<16} in {:>11} out {:>11}",
                            node.name, node.records_in, node.records_out
                        );
                    }
                }
                runs.push(m);
            }
            rows.push(Row::of(&job.name, p, &runs));
        }
    }
    print_table(&rows);
    Ok(())
}

/// One line of the table: medians over the runs of one query at one parallelism.
struct Row {
    query: String,
    p: u32,
    runs: usize,
    events: u64,
    wall: Duration,
    cpu: Duration,
    other_cpu: Duration,
}

impl Row {
    fn of(query: &str, p: u32, runs: &[Measurement]) -> Row {
        Row {
            query: query.to_string(),
            p,
            runs: runs.len(),
            events: runs.first().map_or(0, |m| m.events),
            wall: median(runs.iter().map(|m| m.wall).collect()),
            cpu: median(runs.iter().map(|m| m.cpu).collect()),
            other_cpu: median(runs.iter().map(|m| m.other_cpu).collect()),
        }
    }
}

/// Prints the table; the column names match bench.sh's where they mean the same (`ev/s/core` is
/// events/s divided by the parallelism, `ev/cpu_s` events per CPU-second of the process,
/// `other_s` the CPU time other processes used meanwhile).
fn print_table(rows: &[Row]) {
    println!(
        "{:<6}{:>3}{:>5}{:>10}{:>8}{:>10}{:>10}{:>8}{:>10}{:>8}",
        "query",
        "p",
        "runs",
        "events",
        "job_s",
        "events/s",
        "ev/s/core",
        "cpu_s",
        "ev/cpu_s",
        "other_s"
    );
    for r in rows {
        let secs = r.wall.as_secs_f64().max(1e-9);
        let cpu = r.cpu.as_secs_f64().max(1e-9);
        let rate = r.events as f64 / secs;
        println!(
            "{:<6}{:>3}{:>5}{:>10}{:>8.2}{:>10.0}{:>10.0}{:>8.2}{:>10.0}{:>8.2}",
            r.query,
            r.p,
            r.runs,
            r.events,
            secs,
            rate,
            rate / f64::from(r.p),
            cpu,
            r.events as f64 / cpu,
            r.other_cpu.as_secs_f64()
        );
    }
}

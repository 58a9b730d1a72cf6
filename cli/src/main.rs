//! The `eddy` command. Each subcommand is one call into a library crate; this file only parses
//! arguments, reports results and maps failures to exit codes (2: bad job or arguments,
//! 1: the job failed while running).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy_jobs::{compile_file, CompileOptions};
use eddy_operators::{Factory, RunSettings};
use eddy_runtime::exec::{execute, CancelHandle, ExecOptions};
use eddy_runtime::graph::{GeneratorSpec, JobGraph, NodeKind, SinkConnector};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Check a job file and print its plan (nodes, parallelism, partitioning) without running it.
    Check(JobArgs),
}

#[derive(Args)]
struct JobArgs {
    /// The job file (TOML), e.g. jobs/nexmark/q5.toml.
    job: PathBuf,
    /// Fill a `${NAME}` placeholder of the job file; repeat for several (--param input=events.jsonl.gz).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Run every node with N parallel subtasks (threads) instead of the job's default parallelism.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    parallelism: Option<u32>,
    /// Replace the job's Nexmark file sources with the built-in Nexmark generator making N events
    /// (the settings of the shared benchmark data); the `input` parameter is then not needed.
    #[arg(long, value_name = "N")]
    generate: Option<u64>,
    /// Event rate of --generate, in events per second of event time.
    #[arg(
        long,
        value_name = "EVENTS_PER_SEC",
        default_value_t = 1000,
        requires = "generate"
    )]
    rate: u64,
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
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "`{text}` is not NAME=VALUE (e.g. --param input=events.jsonl.gz)"
        )),
    }
}

/// A job that cannot be compiled: exit code 2, with the compiler's message as is.
struct BadJob(String);

fn load(args: &JobArgs) -> Result<JobGraph, BadJob> {
    let mut params: BTreeMap<String, String> = args.params.iter().cloned().collect();
    if args.generate.is_some() {
        // The generator replaces the input file; a placeholder keeps `${input}` satisfied.
        params
            .entry("input".into())
            .or_insert_with(|| "<generated>".into());
    }
    let options = CompileOptions {
        params,
        parallelism: args.parallelism,
    };
    let mut graph = compile_file(&args.job, &options).map_err(|e| BadJob(e.to_string()))?;
    if let Some(events) = args.generate {
        let replaced = eddy_jobs::use_nexmark_generator(
            &mut graph,
            GeneratorSpec {
                events: Some(events),
                rate: args.rate,
                base_time: eddy_jobs::DEFAULT_NEXMARK_BASE_TIME,
                throttle: false,
            },
        );
        if replaced == 0 {
            return Err(BadJob(format!(
                "error: --generate needs a Nexmark file source, and {} has none",
                args.job.display()
            )));
        }
    }
    Ok(graph)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let graph = match load(&args.job) {
        Ok(g) => g,
        Err(BadJob(message)) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    let factory = Factory::new(RunSettings {
        dead_letter_path: args.dead_letter.clone(),
    });
    let options = ExecOptions {
        batch_size: args.batch_size as usize,
        ..ExecOptions::default()
    };
    let stats = execute(&graph, &factory, &options, &CancelHandle::default())
        .with_context(|| format!("job `{}` failed", graph.name))?;
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
                };
                eprintln!("sink `{}`: {rows} changes in, result {place}", node.name);
            }
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

fn check(args: JobArgs) -> ExitCode {
    let graph = match load(&args) {
        Ok(g) => g,
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
    }
}

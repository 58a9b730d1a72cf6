//! `eddy chaos`: the chaos harness (eddy-chaos) from the command line. With no arguments it
//! runs Nexmark q5 over 100,000 generated events on three workers with 30 seeded faults, a run
//! of a few minutes that a newcomer can start with one command.

use clap::Args;
use eddy_chaos::faults::FaultKind;
use eddy_chaos::{ChaosConfig, JobScenario, Scenario, ShopScenario};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ChaosArgs {
    /// The job to run (a TOML job file).
    #[arg(long, value_name = "JOB.toml", default_value = "jobs/nexmark/q5.toml")]
    job: PathBuf,
    /// Fill a `${NAME}` placeholder of the job (`output` is set by the harness). Without an
    /// `input`, 100,000 Nexmark events are generated into the run directory.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = crate::parse_param)]
    params: Vec<(String, String)>,
    /// The rows the committed output must hold (JSON lines, .gz allowed); default: Flink's
    /// answer next to a Nexmark job (jobs/nexmark/expected/qN.jsonl[.gz]).
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// `ecommerce`: instead of --job, each round generates shop traffic into Kafka topics,
    /// runs jobs/ecommerce/analytics.toml into a PostgreSQL warehouse and compares every KPI
    /// with the generator's ground truth; PostgreSQL and the broker (its log kept in SQLite)
    /// are restarted as faults of their own.
    #[arg(long, value_name = "NAME", value_parser = ["ecommerce"])]
    scenario: Option<String>,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: u32,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallelism: u32,
    /// Faults to inject (every kind once first, then a seeded mix).
    #[arg(long, default_value_t = 30)]
    faults: usize,
    /// The seed of the schedule: the same seed injects the same faults.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fault kinds to draw from, comma-separated (default: all the scenario supports).
    #[arg(long, value_delimiter = ',', value_parser = FaultKind::parse)]
    kinds: Vec<FaultKind>,
    /// Every fault must be recovered from (next completed checkpoint, 90 % throughput)
    /// within this long after it healed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_interval)]
    max_recovery: Duration,
    /// Pauses and partitions last at most this long (drawn up to 10 s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_interval)]
    max_fault_duration: Duration,
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = crate::parse_interval)]
    checkpoint_interval: Duration,
    /// Input records each source reads per second: a round lasts input / rate.
    #[arg(long, value_name = "ROWS_PER_SEC", default_value_t = 1000)]
    max_rate: u64,
    /// With --scenario ecommerce: the share of shop events sent an hour late (beyond the
    /// watermark delay), which the ground truth counts as late.
    #[arg(long, value_name = "SHARE", default_value_t = 0.003)]
    late_share: f64,
    /// Where the cluster, its logs and the outputs go (default: a new temporary directory,
    /// removed after a passing run).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Flink's answer for a job under jobs/nexmark.
fn default_expected(job: &Path) -> Option<PathBuf> {
    let stem = job.file_stem()?.to_str()?;
    let dir = job.parent()?.join("expected");
    [format!("{stem}.jsonl"), format!("{stem}.jsonl.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
}

fn count_lines(path: &Path) -> u64 {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    std::io::BufReader::new(reader).lines().count() as u64
}

fn bad(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::from(2))
}

/// The shop traffic of each round of the e-commerce scenario: 12 minutes of a small shop at
/// 80 events per second of event time, with malformed events and a revenue drop (and late
/// events, `--late-share`).
const SHOP_TRAFFIC: &[&str] = &[
    "--seed",
    "7",
    "--start",
    "2026-01-01T00:00:00Z",
    "--rate",
    "80",
    "--duration",
    "12min",
    "--users",
    "3000",
    "--products",
    "400",
    "--malformed-share",
    "0.01",
    "--anomaly",
    "revenue-drop:at=10min,for=1min,factor=0",
];

pub fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let (dir, temp) = match &args.dir {
        Some(d) => (std::path::absolute(d)?, None),
        None => {
            let t = tempfile::Builder::new().prefix("eddy-chaos-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let scenario = match &args.scenario {
        Some(_) => {
            let job = std::path::absolute("jobs/ecommerce/analytics.toml")?;
            if !job.exists() {
                return bad(format!(
                    "`{}` does not exist: run --scenario ecommerce from the repository root",
                    job.display()
                ));
            }
            Scenario::Shop(ShopScenario {
                job,
                generate: SHOP_TRAFFIC
                    .iter()
                    .map(|a| a.to_string())
                    .chain(["--late-share".to_string(), args.late_share.to_string()])
                    .collect(),
                max_rate: args.max_rate,
                events: 80 * 12 * 60,
            })
        }
        None => match job_scenario(&args, &dir)? {
            Ok(s) => Scenario::Job(s),
            Err(message) => return bad(message),
        },
    };
    let config = ChaosConfig {
        exe: std::env::current_exe()?,
        scenario,
        workers: args.workers as usize,
        slots: args.slots,
        parallelism: args.parallelism,
        faults: args.faults,
        seed: args.seed,
        kinds: if args.kinds.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            args.kinds.clone()
        },
        max_recovery: args.max_recovery,
        max_fault_duration: args.max_fault_duration,
        checkpoint_interval: args.checkpoint_interval,
        dir: dir.clone(),
        log_filter: std::env::var("EDDY_CHAOS_LOG")
            .unwrap_or_else(|_| "warn,openraft=error".into()),
    };
    run(config, &dir, temp, args.report.as_deref())
}

/// The job scenario of `--job`: its parameters (an `input` of generated Nexmark events when
/// none is given) and reference; `Err` with what is wrong with the arguments.
fn job_scenario(args: &ChaosArgs, dir: &Path) -> anyhow::Result<Result<JobScenario, String>> {
    if !args.job.exists() {
        return Ok(Err(format!(
            "job file `{}` does not exist (--job; run from the repository root for the default)",
            args.job.display()
        )));
    }
    let Some(expected) = args
        .expected
        .clone()
        .or_else(|| default_expected(&args.job))
    else {
        return Ok(Err(format!(
            "no reference for `{}`: give --expected FILE with the rows its output must hold",
            args.job.display()
        )));
    };
    let mut params = args.params.clone();
    let input_records = match params.iter().find(|(k, _)| k == "input") {
        Some((_, input)) => count_lines(Path::new(input)),
        None => {
            let path = dir.join("events-100k.jsonl");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            eddy_operators::format::write_nexmark_events(
                &mut out,
                100_000,
                eddy_jobs::DEFAULT_NEXMARK_BASE_TIME as u64,
                1000,
            )?;
            std::io::Write::flush(&mut out)?;
            params.push(("input".into(), path.display().to_string()));
            100_000
        }
    };
    for (_, v) in params.iter_mut() {
        // Workers resolve paths from their own directories.
        let p = Path::new(v.as_str());
        if p.exists() {
            *v = std::path::absolute(p)?.display().to_string();
        }
    }
    Ok(Ok(JobScenario {
        job: std::path::absolute(&args.job)?,
        params,
        expected,
        max_rate: args.max_rate,
        input_records,
    }))
}

/// Runs the harness, prints the report and keeps the run directory of a failed run.
fn run(
    config: ChaosConfig,
    dir: &Path,
    temp: Option<tempfile::TempDir>,
    report_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "chaos: {} faults (seed {}) into 3 coordinators and {} workers; run directory {}",
        config.faults,
        config.seed,
        config.workers,
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Interrupted, the run is dropped: its cluster, dependencies and small file systems stop
    // with it (they outlived an interrupted harness before).
    let outcome = rt.block_on(async {
        tokio::select! {
            outcome = eddy_chaos::run(config) => Some(outcome),
            _ = crate::cluster::until_signal() => None,
        }
    });
    let Some(outcome) = outcome else {
        eprintln!(
            "interrupted: the cluster and its dependencies are stopped; the run directory {} is kept",
            dir.display()
        );
        if let Some(t) = temp {
            let _ = t.keep();
        }
        return Ok(ExitCode::from(130));
    };
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(t) = temp {
                let _ = t.keep();
            }
            return Ok(ExitCode::from(1));
        }
    };
    print!("{}", report.render());
    if let Some(path) = report_path {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    if report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        if let Some(t) = temp {
            let kept = t.keep();
            eprintln!("the run's logs and outputs are kept in {}", kept.display());
        }
        // 3: no verdict (the host failed the harness), apart from 1: Eddy failed.
        Ok(ExitCode::from(if report.inconclusive.is_some() {
            3
        } else {
            1
        }))
    }
}

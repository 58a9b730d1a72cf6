//! The chaos harness: a real cluster on loopback (three coordinator and N worker processes,
//! every node-to-node connection through a fault-injecting proxy), a job run with checkpoints at
//! a paced input rate, a seeded schedule of faults injected while it runs, and the invariants
//! checked from the consumer's side afterwards: the committed output equals the reference with
//! nothing lost or duplicated, a cancelled job writes nothing after its cancel returned,
//! checkpoint ids never go backwards, Raft never has two leaders in one term, job states never
//! go backwards, and every fault is recovered from within the bound.
//!
//! `eddy chaos` is the command; docs/reliability.md describes the faults and the report.

pub mod cluster;
pub mod faults;
pub mod inject;
pub mod monitor;
pub mod proxy;
pub mod report;
mod round;
pub mod scenario;
pub mod shop;
pub mod storage;

use cluster::{Cluster, ClusterConfig};
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::ListWorkersRequest;
use faults::FaultKind;
use report::{FaultRecord, Report, RoundResult};
use round::Round;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What went wrong running the harness itself (not a finding about Eddy: those are in the
/// report).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the run: {0}")]
    Setup(String),
    #[error("the cluster did not answer: {0}")]
    Cluster(String),
}

impl ChaosError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ChaosError {
        ChaosError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub use scenario::{JobScenario, Scenario, ShopScenario};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `eddy` binary the nodes run.
    pub exe: PathBuf,
    pub scenario: Scenario,
    pub workers: usize,
    pub slots: u32,
    pub parallelism: u32,
    pub faults: usize,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// A fault must be recovered from within this long.
    pub max_recovery: Duration,
    /// Pauses and partitions last at most this long.
    pub max_fault_duration: Duration,
    pub checkpoint_interval: Duration,
    /// Where the cluster and the outputs live.
    pub dir: PathBuf,
    /// Log filter of the nodes (`RUST_LOG`).
    pub log_filter: String,
}

/// Runs the harness and returns its report; `Err` only when the harness itself could not run.
pub async fn run(config: ChaosConfig) -> Result<Report, ChaosError> {
    let started = Instant::now();
    let mut skipped: Vec<String> = Vec::new();
    let mut kinds = config.kinds.clone();
    // Kinds this run cannot inject are left out, and the report says why.
    let disk = storage::Disks::prepare(
        &config.dir,
        config.workers,
        kinds.contains(&FaultKind::DiskFull),
    )?;
    if kinds.contains(&FaultKind::DiskFull) && !disk.available() {
        kinds.retain(|k| *k != FaultKind::DiskFull);
        skipped.push(format!(
            "{}: needs root to mount small file systems (run as root to include it)",
            FaultKind::DiskFull.name()
        ));
    }
    for k in [FaultKind::RestartPostgres, FaultKind::RestartKafka] {
        if kinds.contains(&k) && !config.scenario.has_dependencies() {
            kinds.retain(|x| *x != k);
            skipped.push(format!(
                "{}: the job scenario has no such dependency (use --scenario ecommerce)",
                k.name()
            ));
        }
    }
    if kinds.is_empty() {
        return Err(ChaosError::Setup("no fault kind left to inject".into()));
    }
    let schedule = faults::schedule(config.seed, config.faults, &kinds, config.workers);
    let mut deps = off_runtime(|| scenario::Dependencies::start(&config.scenario))?;
    let sources = config.scenario.source_names(&deps)?;
    let fault_dir = config.dir.join("faults");
    std::fs::create_dir_all(&fault_dir).map_err(|e| ChaosError::io(&fault_dir, e))?;
    let cluster_config = ClusterConfig {
        exe: config.exe.clone(),
        workers: config.workers,
        slots: config.slots,
        dir: config.dir.join("cluster"),
        log_filter: config.log_filter.clone(),
        fault_dir: fault_dir.clone(),
        seed: config.seed,
        // The run directory (outputs, checkpoints) and what the job reads.
        allow_paths: std::iter::once(config.dir.clone())
            .chain(config.scenario.input_dirs())
            .collect(),
    };
    let mut cluster = Cluster::start(&cluster_config).await?;
    let client = Arc::new(Coordinators::new(cluster.coordinator_addrs()));
    wait_for_workers(&client, config.workers).await?;
    let monitor = monitor::Monitor::start(Arc::clone(&client), &cluster, sources);
    let mut injector = inject::Injector::new(&config, fault_dir, disk);
    let checkpoints = injector.checkpoints().to_path_buf();
    let mut rounds: Vec<RoundResult> = Vec::new();
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut round = Round::start(&config, &client, &monitor, &checkpoints, &deps, 1).await?;
    let mut baseline: Option<f64> = None;
    let progress = Progress::new(&config.dir);
    let mut stopped: Option<String> = None;
    for (index, planned) in schedule.iter().enumerate() {
        if let Some(why) = storage::host_disk_low(&config.dir) {
            eprintln!("stopping before fault {}: {why}", index + 1);
            stopped = Some(why);
            break;
        }
        // A round whose job finished is checked, and the next one starts.
        if round.finished(&monitor) {
            let result = round.verify(&config, &monitor).await;
            discard_checkpoints(&checkpoints, &result);
            progress.append(&result);
            rounds.push(result);
            round = Round::start(
                &config,
                &client,
                &monitor,
                &checkpoints,
                &deps,
                rounds.len() + 1,
            )
            .await?;
        }
        round.wait_running(&monitor, Duration::from_secs(60)).await;
        if baseline.is_none() {
            baseline = monitor
                .source_rate(&round.job, Duration::from_secs(2))
                .await;
        }
        if index % 5 == 2 {
            round.cancel_decoy(&client).await;
        }
        let record = injector
            .inject(
                index,
                planned,
                &mut cluster,
                &mut deps,
                &client,
                &monitor,
                &round.job,
                baseline,
            )
            .await;
        eprintln!(
            "fault {:>3}/{}  {:<30} {:<40} {:>7} ms  checkpoint after {:>6}  90% rate after {:>6}{}",
            index + 1,
            schedule.len(),
            record.kind.name(),
            record.target,
            record.duration_ms,
            report::show(record.checkpoint_recovery_ms),
            report::show(record.throughput_recovery_ms),
            if record.within_bound { "" } else { "  (over the bound)" }
        );
        progress.append(&record);
        let over = !record.within_bound;
        records.push(record);
        // A recovery that took too long while the host's own disk was full says nothing
        // about Eddy.
        if let Some(why) = over.then(|| storage::host_disk_low(&config.dir)).flatten() {
            eprintln!("stopping after fault {}: {why}", index + 1);
            stopped = Some(why);
            break;
        }
    }
    injector.heal_all(&mut cluster, &mut deps).await;
    // The last round runs to its end; then the checks.
    round.cancel_decoy(&client).await;
    let bound = round.time_left(&config) + Duration::from_secs(120);
    round
        .wait_finished_supervised(&monitor, bound, &mut cluster, &mut injector)
        .await;
    let last = round.verify(&config, &monitor).await;
    progress.append(&last);
    rounds.push(last);
    let observed = monitor.stop().await;
    // The history of every job, for a post-mortem of a failed run.
    let samples = config.dir.join("samples.jsonl");
    let lines: Vec<String> = observed
        .samples
        .iter()
        .flat_map(|(job, samples)| {
            samples.iter().map(move |s| {
                format!(
                    "{{\"job\":{job:?},\"sample\":{}}}",
                    serde_json::to_string(s).unwrap_or_default()
                )
            })
        })
        .collect();
    if let Err(e) = std::fs::write(&samples, lines.join("\n")) {
        tracing::warn!(path = %samples.display(), error = %e, "cannot write the samples");
    }
    let mut report = Report::new(
        &config,
        schedule,
        records,
        rounds,
        observed,
        skipped,
        baseline,
        started.elapsed(),
    );
    report.crashes = std::mem::take(&mut injector.crashes);
    if let Some(why) = stopped {
        report.passed = false;
        report.inconclusive = Some(why);
    }
    Ok(report)
}

/// Every fault record and round result as a JSON line, written as the run goes: a long run
/// cut off (a stop, a lost session) still leaves what it found so far.
struct Progress {
    path: PathBuf,
}

impl Progress {
    fn new(dir: &std::path::Path) -> Progress {
        let path = dir.join("progress.jsonl");
        let _ = std::fs::remove_file(&path);
        Progress { path }
    }

    fn append(&self, item: &impl serde::Serialize) {
        use std::io::Write;
        let written = serde_json::to_string(item)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(f, "{line}")
            });
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record the progress");
        }
    }
}

/// Removes the checkpoints of a round that passed, as an operator removes those of a finished
/// job: they share one small file system (for the disk-full faults), which q7's rounds of
/// 12 MB each filled after 20 rounds. A failed round's stay for the post-mortem.
fn discard_checkpoints(checkpoints: &std::path::Path, result: &RoundResult) {
    if !result.problems.is_empty() || result.missing + result.duplicated + result.unexpected > 0 {
        return;
    }
    for name in [
        format!("round-{}", result.round),
        format!("decoy-{}", result.round),
    ] {
        let _ = std::fs::remove_dir_all(checkpoints.join(name));
    }
}

/// Runs blocking code that must not run on a tokio thread at all (the synchronous `postgres`
/// client starts a runtime of its own) on a thread of its own, and waits for it.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Waits until `n` workers are registered with a leader.
async fn wait_for_workers(client: &Coordinators, n: usize) -> Result<(), ChaosError> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let workers = client
            .call(Duration::from_secs(5), |c| async move {
                eddy_proto::net::client_api(c)
                    .list_workers(ListWorkersRequest {})
                    .await
                    .map(|r| r.into_inner().workers.len())
            })
            .await;
        if let Ok(count) = workers {
            if count >= n {
                return Ok(());
            }
        }
        if Instant::now() > until {
            return Err(ChaosError::Cluster(format!(
                "{n} workers did not register within 60 s (see the logs in the run directory)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

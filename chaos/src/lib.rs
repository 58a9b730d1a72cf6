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
pub mod storage;

use cluster::{Cluster, ClusterConfig};
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::client_api_client::ClientApiClient;
use eddy_proto::v1::{CancelRequest, ListWorkersRequest, SubmitRequest};
use faults::FaultKind;
use report::{FaultRecord, Report, RoundResult};
use std::collections::HashMap;
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

/// The job a run checks: a job file with its parameters and the rows it must commit.
#[derive(Clone, Debug)]
pub struct JobScenario {
    pub job: PathBuf,
    /// `NAME=VALUE` parameters; `output` is set by the harness (one directory per round).
    pub params: Vec<(String, String)>,
    /// The reference: the rows the committed output must hold (JSON lines, `.gz` allowed).
    pub expected: PathBuf,
    /// Input records per second each source reads (wall clock).
    pub max_rate: u64,
    /// Records in the input, for the time a round takes.
    pub input_records: u64,
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `eddy` binary the nodes run.
    pub exe: PathBuf,
    pub scenario: JobScenario,
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
        if kinds.contains(&k) {
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
    let sources = source_names(&config.scenario)?;
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
    };
    let mut cluster = Cluster::start(&cluster_config).await?;
    let client = Arc::new(Coordinators::new(cluster.coordinator_addrs()));
    wait_for_workers(&client, config.workers).await?;
    let monitor = monitor::Monitor::start(Arc::clone(&client), &cluster, sources);
    let mut injector = inject::Injector::new(&config, fault_dir, disk);
    let checkpoints = injector.checkpoints().to_path_buf();
    let mut rounds: Vec<RoundResult> = Vec::new();
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut round = Round::submit(&config, &client, &monitor, &checkpoints, 1).await?;
    let mut baseline: Option<f64> = None;
    for (index, planned) in schedule.iter().enumerate() {
        // A round whose job finished is checked, and the next one starts.
        if round.finished(&monitor) {
            rounds.push(round.verify(&config, &client, &monitor).await);
            round =
                Round::submit(&config, &client, &monitor, &checkpoints, rounds.len() + 1).await?;
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
        records.push(record);
    }
    injector.heal_all(&mut cluster).await;
    // The last round runs to its end; then the checks.
    round.cancel_decoy(&client).await;
    let bound = round.time_left(&config) + Duration::from_secs(120);
    round
        .wait_finished_supervised(&monitor, bound, &mut cluster, &mut injector)
        .await;
    rounds.push(round.verify(&config, &client, &monitor).await);
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
    Ok(report)
}

/// The names of the job's source nodes (their records out are its throughput).
fn source_names(scenario: &JobScenario) -> Result<Vec<String>, ChaosError> {
    let mut params: HashMap<String, String> = scenario.params.iter().cloned().collect();
    params.insert("output".into(), "unused/".into());
    let options = eddy_jobs::CompileOptions {
        params: params.into_iter().collect(),
        ..Default::default()
    };
    let graph = eddy_jobs::compile_file(&scenario.job, &options)
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    Ok(graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, eddy_runtime::graph::NodeKind::Source(_)))
        .map(|n| n.name.clone())
        .collect())
}

/// Waits until `n` workers are registered with a leader.
async fn wait_for_workers(client: &Coordinators, n: usize) -> Result<(), ChaosError> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let workers = client
            .call(Duration::from_secs(5), |c| async move {
                ClientApiClient::new(c)
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

/// One run of the job to its end, with a decoy job that is cancelled while faults happen.
struct Round {
    number: usize,
    job: String,
    output: PathBuf,
    submitted: Instant,
    decoy: Option<Decoy>,
}

/// A job cancelled mid-run, and what its committed output held when the cancel returned.
struct Decoy {
    job: String,
    output: PathBuf,
    at_cancel: Option<Vec<(String, u64)>>,
}

/// The committed files of a sink directory (not hidden, not `_`), with their sizes.
pub fn committed_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            (meta.is_file() && !name.starts_with('.') && !name.starts_with('_'))
                .then_some((name, meta.len()))
        })
        .collect();
    files.sort();
    files
}

async fn submit(
    config: &ChaosConfig,
    client: &Coordinators,
    output: &Path,
    checkpoints: &Path,
    parallelism: u32,
) -> Result<String, ChaosError> {
    let text = std::fs::read_to_string(&config.scenario.job)
        .map_err(|e| ChaosError::io(&config.scenario.job, e))?;
    let mut params: HashMap<String, String> = config.scenario.params.iter().cloned().collect();
    params.insert("output".into(), format!("{}/", output.display()));
    let request = SubmitRequest {
        job_text: text,
        job_path: config.scenario.job.display().to_string(),
        params,
        parallelism,
        checkpoint_interval_ms: config.checkpoint_interval.as_millis() as u64,
        checkpoint_dir: checkpoints.display().to_string(),
        retain_checkpoints: 2,
        max_source_rate: config.scenario.max_rate,
        ..Default::default()
    };
    client
        .call(Duration::from_secs(60), |c| {
            let r = request.clone();
            async move { ClientApiClient::new(c).submit(r).await }
        })
        .await
        .map(|r| r.into_inner().job_id)
        .map_err(|e| ChaosError::Cluster(format!("submit: {}", e.message())))
}

impl Round {
    async fn submit(
        config: &ChaosConfig,
        client: &Coordinators,
        monitor: &monitor::Monitor,
        checkpoints: &Path,
        number: usize,
    ) -> Result<Round, ChaosError> {
        let output = config.dir.join(format!("round-{number}"));
        let job = submit(
            config,
            client,
            &output,
            &checkpoints.join(format!("round-{number}")),
            config.parallelism,
        )
        .await?;
        monitor.watch(&job);
        let decoy_output = config.dir.join(format!("decoy-{number}"));
        let decoy = submit(
            config,
            client,
            &decoy_output,
            &checkpoints.join(format!("decoy-{number}")),
            1,
        )
        .await
        .ok()
        .map(|job| Decoy {
            job,
            output: decoy_output,
            at_cancel: None,
        });
        tracing::info!(round = number, %job, "round submitted");
        Ok(Round {
            number,
            job,
            output,
            submitted: Instant::now(),
            decoy,
        })
    }

    fn finished(&self, monitor: &monitor::Monitor) -> bool {
        monitor.latest(&self.job).is_some_and(|s| s.terminal)
    }

    /// Waits until the job runs and has completed a checkpoint (or ended), at most `limit`.
    async fn wait_running(&self, monitor: &monitor::Monitor, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if monitor
                .latest(&self.job)
                .is_some_and(|s| s.terminal || s.last_checkpoint > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the job's end, restarting processes that crash meanwhile.
    async fn wait_finished_supervised(
        &self,
        monitor: &monitor::Monitor,
        limit: Duration,
        cluster: &mut Cluster,
        injector: &mut inject::Injector,
    ) {
        let until = Instant::now() + limit;
        while Instant::now() < until && !self.finished(monitor) {
            injector.crashes.extend(cluster.reap());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How long the rest of the input takes at the paced rate, from the submission.
    fn time_left(&self, config: &ChaosConfig) -> Duration {
        let total = Duration::from_secs_f64(
            config.scenario.input_records as f64 / config.scenario.max_rate.max(1) as f64,
        );
        total.saturating_sub(self.submitted.elapsed())
    }

    /// Cancels the decoy job (once) and notes what it had committed when the cancel returned.
    async fn cancel_decoy(&mut self, client: &Coordinators) {
        let Some(decoy) = &mut self.decoy else {
            return;
        };
        if decoy.at_cancel.is_some() {
            return;
        }
        let request = CancelRequest {
            job_id: decoy.job.clone(),
        };
        let cancelled = client
            .call(Duration::from_secs(30), |c| {
                let r = request.clone();
                async move { ClientApiClient::new(c).cancel(r).await }
            })
            .await;
        match cancelled {
            Ok(_) => decoy.at_cancel = Some(committed_files(&decoy.output)),
            // Already over (finished before): nothing to check about a cancel.
            Err(e) => {
                tracing::info!(job = %decoy.job, error = %e.message(), "decoy not cancelled");
                self.decoy = None;
            }
        }
    }

    /// The checks of a round whose job ended (or ran out of time).
    async fn verify(
        self,
        config: &ChaosConfig,
        _client: &Coordinators,
        monitor: &monitor::Monitor,
    ) -> RoundResult {
        let last = monitor.latest(&self.job);
        let state = last.as_ref().map(|s| s.state.clone()).unwrap_or_default();
        let mut problems = Vec::new();
        if state != "finished" {
            problems.push(format!(
                "job {} of round {} ended as `{state}` ({})",
                self.job,
                self.number,
                last.as_ref().map(|s| s.message.as_str()).unwrap_or("")
            ));
        }
        let diff = check_output(
            &self.output,
            &config.scenario.expected,
            &config.dir,
            self.number,
        );
        if let Some(e) = &diff.error {
            problems.push(e.clone());
        }
        if let Some(decoy) = &self.decoy {
            if let Some(before) = &decoy.at_cancel {
                // Time for a zombie to show itself.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let after = committed_files(&decoy.output);
                if &after != before {
                    problems.push(format!(
                        "cancelled job {} wrote after its cancel returned: {:?} became {:?}",
                        decoy.job, before, after
                    ));
                }
            }
        }
        RoundResult {
            round: self.number,
            job: self.job,
            state,
            expected: diff.expected,
            found: diff.found,
            missing: diff.missing,
            duplicated: diff.duplicated,
            unexpected: diff.unexpected,
            decoy_cancelled: self.decoy.as_ref().is_some_and(|d| d.at_cancel.is_some()),
            problems,
        }
    }
}

/// How the committed output compares with the reference.
#[derive(Debug, Default)]
struct OutputDiff {
    expected: usize,
    found: usize,
    missing: usize,
    duplicated: usize,
    unexpected: usize,
    error: Option<String>,
}

fn check_output(output: &Path, expected: &Path, dir: &Path, round: usize) -> OutputDiff {
    let scratch = dir.join(format!("round-{round}.jsonl"));
    let mut text = Vec::new();
    for (name, _) in committed_files(output) {
        if let Ok(bytes) = std::fs::read(output.join(name)) {
            text.extend_from_slice(&bytes);
        }
    }
    if let Err(e) = std::fs::write(&scratch, &text) {
        return OutputDiff {
            error: Some(format!("cannot write {}: {e}", scratch.display())),
            ..Default::default()
        };
    }
    let rows = |p: &Path| eddy_jobs::compare::read_rows(p);
    match (rows(expected), rows(&scratch)) {
        (Ok(e), Ok(a)) => {
            let d = eddy_jobs::compare::diff(&e, &a);
            OutputDiff {
                expected: e.len(),
                found: a.len(),
                missing: d.missing.len(),
                duplicated: d.duplicated,
                unexpected: d.extra.len() - d.duplicated,
                error: (!d.is_equal()).then(|| d.to_string()),
            }
        }
        (Err(e), _) | (_, Err(e)) => OutputDiff {
            error: Some(e),
            ..Default::default()
        },
    }
}

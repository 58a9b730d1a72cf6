//! What the harness watches while faults happen, from outside the cluster: every watched job's
//! status (state, attempt, last checkpoint, source throughput) and every coordinator's Raft
//! view (term, whether it is the leader), polled every 100 ms. The invariants that are about
//! history (checkpoint ids and job states never go backwards, one leader per term) are checked
//! on these samples as they arrive.

use crate::cluster::Cluster;
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::JobStatusRequest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One look at a job.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    #[serde(skip)]
    pub at: Instant,
    /// Wall clock, ms since the epoch.
    pub wall_ms: u64,
    pub state: String,
    pub terminal: bool,
    pub message: String,
    pub attempt: u64,
    pub restarts: u64,
    pub last_checkpoint: u64,
    /// Wall clock (ms since the epoch) when the last checkpoint completed.
    pub last_checkpoint_at_ms: u64,
    /// Records the job's source subtasks emitted in the current attempt.
    pub source_records: u64,
}

/// What the monitor saw, for the report.
#[derive(Debug, Default)]
pub struct Observed {
    /// Broken history invariants, with when they were seen.
    pub violations: Vec<String>,
    /// Raft terms seen, with the nodes that claimed leadership in each.
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// Every sample of every job, for a post-mortem (written next to the logs).
    pub samples: BTreeMap<String, Vec<Sample>>,
}

#[derive(Default)]
struct Shared {
    jobs: HashMap<String, Vec<Sample>>,
    observed: Observed,
    stop: bool,
}

/// The background poller.
pub struct Monitor {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    /// Names of the job's source nodes, whose records out are its throughput.
    pub sources: Arc<Vec<String>>,
}

/// Wall-clock milliseconds since the epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Monitor {
    /// Starts polling (jobs are added with [`Monitor::watch`]).
    pub fn start(client: Arc<Coordinators>, cluster: &Cluster, sources: Vec<String>) -> Monitor {
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let metrics: Vec<(u64, String)> = cluster
            .metrics
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        let sources = Arc::new(sources);
        let task = {
            let shared = Arc::clone(&shared);
            let sources = Arc::clone(&sources);
            tokio::spawn(async move {
                loop {
                    let jobs: Vec<String> = {
                        let s = lock(&shared);
                        if s.stop {
                            return;
                        }
                        s.jobs.keys().cloned().collect()
                    };
                    let polls = jobs.iter().map(|job| poll_job(&client, job, &sources));
                    let results = futures_join(polls).await;
                    let raft =
                        futures_join(metrics.iter().map(|(id, addr)| poll_raft(*id, addr))).await;
                    {
                        let mut s = lock(&shared);
                        for (job, sample) in jobs.into_iter().zip(results) {
                            if let Some(sample) = sample {
                                record(&mut s, &job, sample);
                            }
                        }
                        for (id, (term, is_leader)) in raft.into_iter().flatten() {
                            if is_leader {
                                let claimed = s.observed.leaders.entry(term).or_default();
                                claimed.insert(id);
                                if claimed.len() > 1 {
                                    let v =
                                        format!("two leaders in term {term}: nodes {claimed:?}");
                                    if !s.observed.violations.contains(&v) {
                                        s.observed.violations.push(v);
                                    }
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Monitor {
            shared,
            task,
            sources,
        }
    }

    /// Starts watching a job.
    pub fn watch(&self, job: &str) {
        lock(&self.shared).jobs.entry(job.to_string()).or_default();
    }

    /// The latest sample of a job.
    pub fn latest(&self, job: &str) -> Option<Sample> {
        lock(&self.shared).jobs.get(job)?.last().cloned()
    }

    /// Samples of a job since `since`.
    pub fn since(&self, job: &str, since: Instant) -> Vec<Sample> {
        lock(&self.shared)
            .jobs
            .get(job)
            .map(|v| v.iter().filter(|s| s.at >= since).cloned().collect())
            .unwrap_or_default()
    }

    /// The job's source records per second over the next `window`, if it ran undisturbed.
    pub async fn source_rate(&self, job: &str, window: Duration) -> Option<f64> {
        let start = self.latest(job)?;
        tokio::time::sleep(window).await;
        let end = self.latest(job)?;
        rate(&start, &end)
    }

    /// Stops polling and returns what was seen.
    pub async fn stop(self) -> Observed {
        lock(&self.shared).stop = true;
        let _ = self.task.await;
        let mut s = lock(&self.shared);
        let samples = std::mem::take(&mut s.jobs).into_iter().collect();
        let mut observed = std::mem::take(&mut s.observed);
        observed.samples = samples;
        observed
    }
}

/// Records per second between two samples of one attempt.
pub fn rate(a: &Sample, b: &Sample) -> Option<f64> {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    (a.attempt == b.attempt && secs > 0.0 && b.source_records >= a.source_records)
        .then(|| (b.source_records - a.source_records) as f64 / secs)
}

/// Adds a sample, checking that nothing went backwards since the previous one.
fn record(s: &mut Shared, job: &str, sample: Sample) {
    let samples = s.jobs.entry(job.to_string()).or_default();
    let mut violations = Vec::new();
    if let Some(prev) = samples.last() {
        if sample.last_checkpoint < prev.last_checkpoint {
            violations.push(format!(
                "{job}: the last completed checkpoint went back from {} to {}",
                prev.last_checkpoint, sample.last_checkpoint
            ));
        }
        if sample.attempt < prev.attempt || sample.restarts < prev.restarts {
            violations.push(format!(
                "{job}: attempt {} (restarts {}) after attempt {} (restarts {})",
                sample.attempt, sample.restarts, prev.attempt, prev.restarts
            ));
        }
        if prev.terminal && sample.state != prev.state {
            violations.push(format!(
                "{job}: was {} and became {}",
                prev.state, sample.state
            ));
        }
    }
    samples.push(sample);
    for v in violations {
        if !s.observed.violations.contains(&v) {
            s.observed.violations.push(v);
        }
    }
}

async fn futures_join<T, F: std::future::Future<Output = T>>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    for f in handles {
        out.push(f.await);
    }
    out
}

async fn poll_job(client: &Coordinators, job: &str, sources: &[String]) -> Option<Sample> {
    let request = JobStatusRequest {
        job_id: job.to_string(),
    };
    let status = client
        .call(Duration::from_millis(900), |c| {
            let r = request.clone();
            async move { eddy_proto::net::client_api(c).job_status(r).await }
        })
        .await
        .ok()?
        .into_inner();
    let summary = status.job?;
    let terminal = matches!(summary.state.as_str(), "finished" | "cancelled" | "failed");
    Some(Sample {
        at: Instant::now(),
        wall_ms: wall_ms(),
        terminal,
        message: summary.message,
        attempt: summary.attempt,
        restarts: status.restarts,
        last_checkpoint: status.last_checkpoint,
        last_checkpoint_at_ms: status.last_checkpoint_at_ms,
        source_records: status
            .tasks
            .iter()
            .filter(|t| sources.contains(&t.name))
            .map(|t| t.records_out)
            .sum(),
        state: summary.state,
    })
}

/// A coordinator's (term, is leader) from its metrics.
async fn poll_raft(id: u64, addr: &str) -> Option<(u64, (u64, bool))> {
    let text = crate::cluster::scrape(addr, Duration::from_millis(300)).await?;
    let node = format!("node=\"{id}\"");
    let value = |metric: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(&node))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let term = value("eddy_raft_term{")? as u64;
    let leader = value("eddy_raft_is_leader{")? > 0.5;
    Some((id, (term, leader)))
}

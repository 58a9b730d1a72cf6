//! One job's life on the leader: a task per job that owns the job's soft state and drives a
//! typed state machine ([`states`]), one file per state. The API and the leader's loop talk to
//! it with [`JobEvent`]s, so no lock is held across an await, a slow worker stalls only the
//! jobs it runs, and every decision goes through Raft before anyone acts on it (a new leader
//! resumes from what Raft holds, adopting running attempts).

pub mod restart;
mod states;

use crate::error::CoordinatorError;
use crate::leader::LeaderOptions;
use crate::raft::RaftNode;
use crate::state::{ClusterState, JobRecord, WorkerId};
use crate::workers::WorkerClients;
use eddy_proto::v1::{AttemptEndedRequest, CancelAttemptRequest, TaskStatus};
use eddy_runtime::checkpoint::coordinator::CoordinatorInput;
use eddy_runtime::error::FaultDomain;
use eddy_runtime::exec::task_layout;
use eddy_runtime::graph::JobGraph;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A savepoint's outcome: its id and location, or why it failed.
pub type SavepointResult = Result<(u64, String), CoordinatorError>;

/// What happens to a job, as its driver hears it.
#[derive(Debug)]
pub enum JobEvent {
    /// A task's checkpoint acknowledgement (or end-of-input report) for an attempt.
    Ack {
        attempt: u64,
        input: CoordinatorInput,
    },
    /// A worker's part of an attempt ended.
    PartEnded {
        attempt: u64,
        addr: String,
        report: AttemptEndedRequest,
    },
    /// A worker was declared lost.
    WorkerLost { addr: String, reason: String },
    /// A user cancels the job.
    Cancel(oneshot::Sender<Result<(), CoordinatorError>>),
    /// A user asks for a savepoint into `dir` (and to stop the job after it).
    Savepoint {
        dir: String,
        stop: bool,
        reply: oneshot::Sender<SavepointResult>,
    },
}

/// Why an attempt ended badly.
#[derive(Clone, Debug)]
pub struct Failure {
    pub domain: FaultDomain,
    pub message: String,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            domain: FaultDomain::Transient,
            message: message.into(),
        }
    }
}

/// Where task counters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountersFrom {
    /// A periodic heartbeat: a snapshot of tasks that may still be running.
    Heartbeat,
    /// The report that the worker's part of the attempt ended: its final counters.
    End,
}

#[derive(Debug, Default)]
struct JobCounters {
    attempt: u64,
    by_worker: HashMap<u64, Vec<TaskStatus>>,
    /// Workers whose final counters arrived: a heartbeat built earlier and delivered later
    /// must not overwrite them.
    final_from: HashSet<u64>,
}

/// Task counters of each job's latest attempt, from heartbeats and end reports (leader-local
/// soft state: a new leader starts with none).
#[derive(Debug, Default)]
pub struct Counters {
    jobs: HashMap<String, JobCounters>,
}

impl Counters {
    pub fn record(
        &mut self,
        job: &str,
        attempt: u64,
        worker: u64,
        tasks: Vec<TaskStatus>,
        from: CountersFrom,
    ) {
        let c = self.jobs.entry(job.to_string()).or_default();
        if attempt < c.attempt {
            return;
        }
        if attempt > c.attempt {
            *c = JobCounters {
                attempt,
                ..JobCounters::default()
            };
        }
        match from {
            CountersFrom::Heartbeat if c.final_from.contains(&worker) => return,
            CountersFrom::Heartbeat => {}
            CountersFrom::End => {
                c.final_from.insert(worker);
            }
        }
        c.by_worker.insert(worker, tasks);
    }

    /// The counters of the job's latest attempt.
    pub fn tasks(&self, job: &str) -> Vec<TaskStatus> {
        self.jobs
            .get(job)
            .map(|c| c.by_worker.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps only jobs the state still knows.
    pub fn retain(&mut self, known: impl Fn(&str) -> bool) {
        self.jobs.retain(|job, _| known(job));
    }
}

/// What every job driver shares.
pub struct Ctx {
    pub raft: RaftNode,
    pub workers: WorkerClients,
    pub options: LeaderOptions,
    pub counters: Mutex<Counters>,
}

impl Ctx {
    pub fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `spec` with its secret parameters opened with the cluster's key.
    pub fn unseal(&self, spec: &crate::state::JobSpec) -> Result<crate::state::JobSpec, String> {
        if spec.sealed_params.is_empty() {
            return Ok(spec.clone());
        }
        let key = self.options.secrets.as_ref().ok_or(
            "the job has secret parameters, but this coordinator has no secrets key (--secrets-key)",
        )?;
        spec.unsealed(|name, sealed| key.open(name, sealed).map_err(|e| e.to_string()))
    }
}

/// The driver of one job, as the leader holds it.
pub struct JobHandle {
    events: mpsc::UnboundedSender<JobEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl JobHandle {
    /// Starts driving `job`. `adopt`: the job runs an attempt a previous leader started.
    pub fn spawn(ctx: Arc<Ctx>, job: String) -> JobHandle {
        let (events, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(states::drive(ctx, job, rx));
        JobHandle { events, task }
    }

    /// Hands an event to the driver; false when the driver is gone.
    pub fn send(&self, event: JobEvent) -> bool {
        self.events.send(event).is_ok()
    }

    /// Whether the driver ended (its job reached a terminal state).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for JobHandle {
    /// A driver never outlives its leader's term.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where an attempt's task subtasks run.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// Worker address by global task index.
    pub task_addrs: Vec<String>,
    /// Global task indices by worker address.
    pub per_worker: BTreeMap<String, Vec<u32>>,
}

impl Deployment {
    /// Lays out `graph` on `slots` (slot i runs subtask i of every task); `None` when a slot's
    /// worker is no longer registered.
    pub fn plan(graph: &JobGraph, slots: &[WorkerId], state: &ClusterState) -> Option<Deployment> {
        if slots.is_empty() {
            return None;
        }
        let layout = task_layout(graph);
        let total: usize = layout.iter().map(|t| t.parallelism as usize).sum();
        let mut task_addrs = vec![String::new(); total];
        let mut per_worker: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for task in &layout {
            for s in 0..task.parallelism {
                let worker = slots[s as usize % slots.len()];
                let addr = state.workers.get(&worker)?.addr.clone();
                let index = task.first_index + s as usize;
                task_addrs[index] = addr.clone();
                per_worker.entry(addr).or_default().push(index as u32);
            }
        }
        Some(Deployment {
            task_addrs,
            per_worker,
        })
    }

    pub fn workers(&self) -> BTreeSet<String> {
        self.per_worker.keys().cloned().collect()
    }
}

/// The job as Raft holds it now.
fn record(ctx: &Ctx, job: &str) -> Option<JobRecord> {
    ctx.raft.with_state(|s| s.jobs.get(job).cloned())
}

/// Cancels an attempt on its workers (concurrently, bounded); unreachable workers are left to
/// their own cancel when the leader declares them lost.
async fn stop_attempt(ctx: &Ctx, job: &str, attempt: u64, workers: &BTreeSet<String>) {
    let request = CancelAttemptRequest {
        job_id: job.to_string(),
        attempt,
    };
    for (addr, result) in ctx
        .workers
        .call_all(
            workers.iter().cloned(),
            ctx.options.rpc_timeout,
            |_, mut c| {
                let r = request.clone();
                async move { c.cancel_attempt(r).await }
            },
        )
        .await
    {
        if let Err(e) = result {
            tracing::debug!(job, attempt, %addr, error = %e.message(), "cancel not delivered");
        }
    }
}

//! What only the leader does: watch worker heartbeats, place job attempts on free slots,
//! drive each running attempt's checkpoints and react to attempts that end or fail.
//!
//! Everything here is soft state, rebuilt by a node when it becomes leader. Decisions go
//! through Raft before anyone acts on them (an attempt is recorded before it is deployed, a
//! checkpoint is recorded before workers commit it), so a new leader never contradicts what
//! the old one made visible. A new leader restarts running jobs from their last completed
//! checkpoint (a fresh attempt) rather than adopting attempts whose checkpoint in flight it
//! knows nothing about; docs/cluster.md has the reasoning and the measured pause.

use crate::raft::{ProposeError, RaftNode};
use crate::state::{CheckpointRecord, ClusterState, Command, JobRecord, JobState, WorkerId};
use eddy_proto::v1::worker_control_client::WorkerControlClient;
use eddy_proto::v1::{
    CancelAttemptRequest, CompleteRequest, DeployRequest, TaskStatus, TriggerRequest,
};
use eddy_runtime::checkpoint::coordinator::{
    CheckpointCoordinator, CoordinatorInput, CoordinatorOutput, ReportedSubtask,
};
use eddy_runtime::checkpoint::storage::DirStorage;
use eddy_runtime::checkpoint::CheckpointStore;
use eddy_runtime::exec::{checkpoint_coordinator, task_layout};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Timing of failure detection and scheduling.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// A worker silent this long is declared lost.
    pub worker_timeout: Duration,
    /// How often the leader looks at workers and jobs.
    pub tick: Duration,
    /// Restarts of an attempt without a completed checkpoint in between before the job fails.
    pub max_restarts: u32,
}

impl Default for LeaderOptions {
    fn default() -> Self {
        LeaderOptions {
            worker_timeout: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            max_restarts: 5,
        }
    }
}

/// A savepoint's outcome: its id and location, or why it failed.
pub type SavepointResult = Result<(u64, String), String>;

/// A savepoint someone waits for.
pub type SavepointWaiter = oneshot::Sender<SavepointResult>;

/// The leader's view of one running attempt.
pub struct AttemptRuntime {
    pub attempt: u64,
    /// Worker address by global task index.
    pub task_addrs: Vec<String>,
    pub workers: HashSet<String>,
    checkpoints: Option<CheckpointCoordinator>,
    interval: Duration,
    next_tick: Instant,
    /// Every worker has its part: before that a trigger would miss the workers deployed last
    /// (they answer "no such attempt") and the checkpoint would wait for their sources forever.
    deployed: bool,
    /// Workers whose part ended well.
    ended_ok: HashSet<String>,
    final_checkpoint_done: bool,
    savepoint_waiters: Vec<SavepointWaiter>,
    stop_after_savepoint: bool,
    /// Where the savepoint in flight goes.
    savepoint_dir: Option<String>,
    /// Latest task counters by worker.
    pub metrics: HashMap<u64, Vec<TaskStatus>>,
    /// Workers whose final counters arrived with the end of their part: a heartbeat built
    /// earlier and delivered later must not overwrite them.
    final_metrics: HashSet<u64>,
}

impl AttemptRuntime {
    /// A just-deployed attempt: nothing ended, no checkpoint or savepoint in flight.
    fn new(
        attempt: u64,
        task_addrs: Vec<String>,
        workers: HashSet<String>,
        checkpoints: Option<CheckpointCoordinator>,
        interval: Duration,
    ) -> Self {
        AttemptRuntime {
            attempt,
            task_addrs,
            workers,
            checkpoints,
            interval,
            next_tick: Instant::now() + interval,
            deployed: false,
            ended_ok: HashSet::new(),
            final_checkpoint_done: false,
            savepoint_waiters: Vec::new(),
            stop_after_savepoint: false,
            savepoint_dir: None,
            metrics: HashMap::new(),
            final_metrics: HashSet::new(),
        }
    }
}

/// Where a worker's task counters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountersFrom {
    /// A periodic heartbeat: a snapshot of tasks that may still be running.
    Heartbeat,
    /// The report that the worker's part of the attempt ended: its final counters.
    End,
}

/// Leader-local state.
#[derive(Default)]
pub struct Soft {
    leading: bool,
    pub heartbeats: HashMap<WorkerId, Instant>,
    pub attempts: HashMap<String, AttemptRuntime>,
    /// Jobs to (re)start with a new attempt, with the reason.
    restart: HashMap<String, String>,
    /// Consecutive failed attempts without progress.
    failures: HashMap<String, u32>,
    /// Per job, the last attempt whose end the leader already acted on: it counted its failure
    /// or stopped it itself. Further reports of its end (every worker of the attempt sends one;
    /// a cancelled attempt reports "cancelled") change nothing.
    settled: HashMap<String, u64>,
    /// Checkpoint coordinator outputs still to act on: (job, attempt, outputs).
    pending: Vec<(String, u64, Vec<CoordinatorOutput>)>,
    /// Task counters of the last attempt of each job whose attempt is over, so that `eddy
    /// status` still shows what a finished job did (leader-local: a new leader has none).
    pub ended: HashMap<String, Vec<TaskStatus>>,
}

impl Soft {
    /// Counters a worker reported for its part of an attempt, if that attempt is current.
    /// Once a worker's final counters arrived, its heartbeats change nothing.
    pub fn record_metrics(
        &mut self,
        job: &str,
        attempt: u64,
        worker: u64,
        tasks: Vec<TaskStatus>,
        from: CountersFrom,
    ) {
        let Some(run) = self.attempts.get_mut(job) else {
            return;
        };
        if run.attempt != attempt {
            return;
        }
        match from {
            CountersFrom::Heartbeat if run.final_metrics.contains(&worker) => return,
            CountersFrom::Heartbeat => {}
            CountersFrom::End => {
                run.final_metrics.insert(worker);
            }
        }
        run.metrics.insert(worker, tasks);
    }

    /// Forgets the current attempt of `job`, keeping its counters.
    fn forget_attempt(&mut self, job: &str) -> Option<AttemptRuntime> {
        let runtime = self.attempts.remove(job)?;
        let tasks = runtime.metrics.values().flatten().cloned().collect();
        self.ended.insert(job.to_string(), tasks);
        Some(runtime)
    }

    /// The counters of the current attempt of `job`, or of its last one.
    pub fn task_statuses(&self, job: &str, attempt: u64) -> Vec<TaskStatus> {
        match self.attempts.get(job) {
            Some(r) if r.attempt == attempt => r.metrics.values().flatten().cloned().collect(),
            _ => self.ended.get(job).cloned().unwrap_or_default(),
        }
    }
}

/// The leader's side of the coordinator, shared by its services and its loop.
pub struct Leader {
    pub raft: RaftNode,
    pub soft: Mutex<Soft>,
    pub options: LeaderOptions,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn open_store(dir: &str) -> Result<CheckpointStore, String> {
    let storage = DirStorage::new(Path::new(dir))
        .map_err(|e| format!("cannot use checkpoint directory `{dir}`: {e}"))?;
    Ok(CheckpointStore::new(Arc::new(storage)))
}

fn worker_client(addr: &str) -> Result<WorkerControlClient<tonic::transport::Channel>, String> {
    eddy_proto::net::channel(addr, Duration::from_secs(5))
        .map(|c| {
            WorkerControlClient::new(c)
                .max_encoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
        })
        .map_err(|e| e.to_string())
}

impl Leader {
    fn lock(&self) -> std::sync::MutexGuard<'_, Soft> {
        self.soft.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn propose(&self, command: Command) -> Result<(), ProposeError> {
        self.raft.propose(command).await.map(|_| ())
    }

    /// One round of the leader's duties; does nothing on followers.
    pub async fn tick(&self) {
        if !self.raft.is_leader() {
            let mut soft = self.lock();
            if soft.leading {
                tracing::info!("no longer the leader");
                *soft = Soft::default();
            }
            return;
        }
        let state = self.raft.state();
        self.take_over(&state);
        self.detect_lost_workers(&state).await;
        let state = self.raft.state();
        self.schedule(&state).await;
        self.drive_checkpoints().await;
    }

    /// Becoming leader: every known worker gets a full timeout to heartbeat, and every job that
    /// was running restarts from its last checkpoint.
    fn take_over(&self, state: &ClusterState) {
        let mut soft = self.lock();
        if soft.leading {
            return;
        }
        tracing::info!(node = self.raft.id(), "became the leader");
        soft.leading = true;
        let now = Instant::now();
        for id in state.workers.keys() {
            soft.heartbeats.insert(*id, now);
        }
        for job in state.jobs.values().filter(|j| !j.state.is_terminal()) {
            if job.state == JobState::Running {
                soft.restart
                    .insert(job.id.clone(), "the coordinator leader changed".into());
            }
        }
    }

    async fn detect_lost_workers(&self, state: &ClusterState) {
        let lost: Vec<WorkerId> = {
            let mut soft = self.lock();
            let now = Instant::now();
            let timeout = self.options.worker_timeout;
            state
                .workers
                .keys()
                .filter(|id| {
                    let seen = *soft.heartbeats.entry(**id).or_insert(now);
                    now.duration_since(seen) > timeout
                })
                .copied()
                .collect()
        };
        for id in lost {
            let addr = state
                .workers
                .get(&id)
                .map(|w| w.addr.clone())
                .unwrap_or_default();
            tracing::warn!(worker = id, %addr, "worker lost (no heartbeat)");
            if self.propose(Command::RemoveWorker { id }).await.is_err() {
                return;
            }
            metrics::counter!("eddy_workers_lost_total").increment(1);
            let mut soft = self.lock();
            soft.heartbeats.remove(&id);
            for job in state.jobs.values() {
                if job.state == JobState::Running && job.slots.contains(&id) {
                    soft.restart
                        .insert(job.id.clone(), format!("worker {id} at {addr} was lost"));
                }
            }
        }
    }

    /// Starts new attempts for jobs that need one and fit into the free slots.
    async fn schedule(&self, state: &ClusterState) {
        let wanted: Vec<(JobRecord, String)> = {
            let mut soft = self.lock();
            let mut wanted = Vec::new();
            for job in state.jobs.values() {
                let reason = match job.state {
                    JobState::Scheduling | JobState::WaitingForSlots => Some(String::new()),
                    JobState::Running => soft.restart.remove(&job.id),
                    _ => None,
                };
                if let Some(reason) = reason {
                    wanted.push((job.clone(), reason));
                }
            }
            wanted
        };
        for (job, reason) in wanted {
            if !reason.is_empty() {
                tracing::warn!(job = %job.id, %reason, "restarting from the last checkpoint");
                self.stop_attempt(&job).await;
            }
            let state = self.raft.state();
            if let Err(e) = self.start_attempt(&state, &job, &reason).await {
                tracing::warn!(job = %job.id, error = %e, "cannot start an attempt");
            }
        }
    }

    /// Cancels the current attempt of a job on its workers and forgets it.
    async fn stop_attempt(&self, job: &JobRecord) {
        let runtime = {
            let mut soft = self.lock();
            soft.settled.insert(job.id.clone(), job.attempt);
            soft.forget_attempt(&job.id)
        };
        let workers: HashSet<String> = match &runtime {
            Some(r) => r.workers.clone(),
            None => {
                let state = self.raft.state();
                job.slots
                    .iter()
                    .filter_map(|w| state.workers.get(w).map(|w| w.addr.clone()))
                    .collect()
            }
        };
        let request = CancelAttemptRequest {
            job_id: job.id.clone(),
            attempt: job.attempt,
        };
        for addr in workers {
            if let Ok(mut c) = worker_client(&addr) {
                let _ = c.cancel_attempt(request.clone()).await;
            }
        }
        if let Some(r) = runtime {
            for w in r.savepoint_waiters {
                let _ = w.send(Err(
                    "the job restarted before the savepoint completed".into()
                ));
            }
        }
    }

    async fn start_attempt(
        &self,
        state: &ClusterState,
        job: &JobRecord,
        reason: &str,
    ) -> Result<(), String> {
        let graph = job.spec.compile().map_err(|e| e.to_string())?;
        let need = job.parallelism as usize;
        let mut free = state.free_slots();
        // Spread slots over workers, most free slots first, so subtasks meet over the network
        // and one worker's loss takes as little as possible with it.
        let mut slots: Vec<WorkerId> = Vec::with_capacity(need);
        while slots.len() < need {
            let Some((&w, n)) = free
                .iter_mut()
                .filter(|(_, n)| **n > 0)
                .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            else {
                break;
            };
            *n -= 1;
            slots.push(w);
        }
        if slots.len() < need {
            let total: u32 = state.free_slots().values().sum();
            let message = format!(
                "waiting for slots: needs {need}, {total} free on {} live workers{}",
                state.workers.len(),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" (restarting: {reason})")
                }
            );
            if job.state != JobState::WaitingForSlots || job.message != message {
                let _ = self
                    .propose(Command::SetJobState {
                        job: job.id.clone(),
                        state: JobState::WaitingForSlots,
                        message,
                    })
                    .await;
            }
            return Ok(());
        }
        let attempt = job.attempt + 1;
        self.propose(Command::StartAttempt {
            job: job.id.clone(),
            attempt,
            slots: slots.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
        let state = self.raft.state();
        let Some(job) = state.jobs.get(&job.id).cloned() else {
            return Ok(());
        };
        let layout = task_layout(&graph);
        let total: usize = layout.iter().map(|t| t.parallelism as usize).sum();
        let mut task_addrs = vec![String::new(); total];
        let mut per_worker: HashMap<String, Vec<u32>> = HashMap::new();
        for task in &layout {
            for s in 0..task.parallelism {
                let worker = slots[s as usize % slots.len()];
                let addr = state
                    .workers
                    .get(&worker)
                    .map(|w| w.addr.clone())
                    .ok_or_else(|| format!("worker {worker} vanished"))?;
                let index = task.first_index + s as usize;
                task_addrs[index] = addr.clone();
                per_worker.entry(addr).or_default().push(index as u32);
            }
        }
        let first_id = job.max_checkpoint_id + 1;
        let checkpoints = if job.spec.checkpoint_interval_ms > 0 {
            let store = open_store(&job.spec.checkpoint_dir)?;
            Some(checkpoint_coordinator(
                &graph,
                store,
                job.spec.retain_checkpoints.max(1) as usize,
                first_id,
                Default::default(),
                true,
            ))
        } else {
            None
        };
        let interval = Duration::from_millis(job.spec.checkpoint_interval_ms.max(1));
        let (restore_checkpoint, restore_dir) = match &job.last_checkpoint {
            Some(c) => (c.id, c.location.clone()),
            None => (0, String::new()),
        };
        let job_json = serde_json::to_vec(&job.spec).map_err(|e| e.to_string())?;
        self.lock().attempts.insert(
            job.id.clone(),
            AttemptRuntime::new(
                attempt,
                task_addrs.clone(),
                per_worker.keys().cloned().collect(),
                checkpoints,
                interval,
            ),
        );
        tracing::info!(job = %job.id, attempt, restore_checkpoint, "deploying");
        let mut failed = None;
        for (addr, tasks) in per_worker {
            let request = DeployRequest {
                job_id: job.id.clone(),
                attempt,
                job_json: job_json.clone(),
                tasks,
                task_addrs: task_addrs.clone(),
                restore_checkpoint,
                restore_dir: restore_dir.clone(),
                first_checkpoint: first_id,
            };
            let deployed = match worker_client(&addr) {
                Ok(mut c) => c.deploy(request).await.map(|_| ()),
                Err(e) => Err(tonic::Status::invalid_argument(e)),
            };
            if let Err(status) = deployed {
                if status.code() == tonic::Code::Unavailable {
                    // The worker is gone before its heartbeats ran out: declare it lost now
                    // and place the attempt again (not the job's fault).
                    if let Some(w) = state.workers.values().find(|w| w.addr == addr) {
                        tracing::warn!(worker = w.id, %addr, "worker unreachable while deploying");
                        let _ = self.propose(Command::RemoveWorker { id: w.id }).await;
                        self.lock().heartbeats.remove(&w.id);
                    }
                    self.lock()
                        .restart
                        .insert(job.id.clone(), format!("worker at {addr} unreachable"));
                    return Ok(());
                }
                failed = Some(format!("deploying to {addr} failed: {}", status.message()));
                break;
            }
        }
        if let Some(e) = failed {
            self.attempt_failed(&job.id, attempt, e).await;
            return Ok(());
        }
        if let Some(r) = self.lock().attempts.get_mut(&job.id) {
            if r.attempt == attempt {
                r.deployed = true;
                r.next_tick = Instant::now() + r.interval;
            }
        }
        Ok(())
    }

    /// A part of an attempt failed: restart the job, or fail it after too many tries.
    pub async fn attempt_failed(&self, job: &str, attempt: u64, error: String) {
        let state = self.raft.state();
        let Some(record) = state.jobs.get(job) else {
            return;
        };
        if record.attempt != attempt || record.state != JobState::Running {
            return;
        }
        let failures = {
            let mut soft = self.lock();
            if soft.settled.get(job) == Some(&attempt) {
                return;
            }
            soft.settled.insert(job.to_string(), attempt);
            let n = soft.failures.entry(job.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        if failures > self.options.max_restarts {
            self.stop_attempt(record).await;
            let _ = self
                .propose(Command::SetJobState {
                    job: job.to_string(),
                    state: JobState::Failed,
                    message: format!("{error} (gave up after {} restarts)", failures - 1),
                })
                .await;
            return;
        }
        self.lock().restart.insert(job.to_string(), error);
    }

    /// A worker's part of an attempt ended.
    pub async fn attempt_ended(
        &self,
        job: &str,
        attempt: u64,
        addr: String,
        failed: bool,
        error: String,
    ) {
        if failed {
            self.attempt_failed(job, attempt, error).await;
            return;
        }
        let done = {
            let mut soft = self.lock();
            match soft.attempts.get_mut(job) {
                Some(r) if r.attempt == attempt => {
                    r.ended_ok.insert(addr);
                    r.ended_ok.len() == r.workers.len()
                        && (r.checkpoints.is_none() || r.final_checkpoint_done)
                }
                _ => false,
            }
        };
        if done {
            self.finish(job).await;
        }
    }

    async fn finish(&self, job: &str) {
        let runtime = self.lock().forget_attempt(job);
        let _ = self
            .propose(Command::SetJobState {
                job: job.to_string(),
                state: JobState::Finished,
                message: String::new(),
            })
            .await;
        if let Some(r) = runtime {
            let request = CancelAttemptRequest {
                job_id: job.to_string(),
                attempt: r.attempt,
            };
            for addr in r.workers {
                if let Ok(mut c) = worker_client(&addr) {
                    let _ = c.cancel_attempt(request.clone()).await;
                }
            }
        }
        tracing::info!(job, "finished");
    }

    /// Cancels a job at a user's request.
    pub async fn cancel(&self, job: &JobRecord) -> Result<(), ProposeError> {
        self.propose(Command::SetJobState {
            job: job.id.clone(),
            state: JobState::Cancelled,
            message: "cancelled by a user".into(),
        })
        .await?;
        self.stop_attempt(job).await;
        Ok(())
    }

    /// Asks for a savepoint of a running job into `dir`.
    pub fn savepoint(
        &self,
        job: &str,
        dir: &str,
        stop: bool,
    ) -> Result<oneshot::Receiver<SavepointResult>, String> {
        let store = open_store(dir)?;
        let (tx, rx) = oneshot::channel();
        let mut soft = self.lock();
        let Some(r) = soft.attempts.get_mut(job) else {
            return Err(format!("{job} is not running"));
        };
        let Some(c) = r.checkpoints.as_mut() else {
            return Err(format!(
                "{job} runs without checkpoints (submit it with --checkpoint-interval)"
            ));
        };
        let outputs = c
            .handle(CoordinatorInput::Savepoint(store))
            .map_err(|e| e.to_string())?;
        r.savepoint_waiters.push(tx);
        r.stop_after_savepoint |= stop;
        r.savepoint_dir = Some(dir.to_string());
        let attempt = r.attempt;
        soft.pending.push((job.to_string(), attempt, outputs));
        Ok(rx)
    }

    /// A task's snapshot arrived.
    pub fn acknowledge(
        &self,
        job: &str,
        attempt: u64,
        input: CoordinatorInput,
    ) -> Result<(), String> {
        let mut soft = self.lock();
        let Some(r) = soft.attempts.get_mut(job) else {
            return Ok(());
        };
        if r.attempt != attempt {
            return Ok(());
        }
        let Some(c) = r.checkpoints.as_mut() else {
            return Ok(());
        };
        let outputs = c.handle(input).map_err(|e| e.to_string())?;
        soft.pending.push((job.to_string(), attempt, outputs));
        Ok(())
    }

    /// Acts on the checkpoint coordinators' outputs queued by acknowledgements and requests.
    pub async fn dispatch_pending(&self) {
        let work = std::mem::take(&mut self.lock().pending);
        for (job, attempt, outputs) in work {
            for output in outputs {
                self.dispatch(&job, attempt, output).await;
            }
        }
    }

    async fn drive_checkpoints(&self) {
        let mut work = Vec::new();
        {
            let mut soft = self.lock();
            work.append(&mut soft.pending);
            let now = Instant::now();
            for (job, r) in soft.attempts.iter_mut() {
                let Some(c) = r.checkpoints.as_mut() else {
                    continue;
                };
                if r.deployed && now >= r.next_tick {
                    r.next_tick = now + r.interval;
                    match c.handle(CoordinatorInput::Tick) {
                        Ok(out) if !out.is_empty() => work.push((job.clone(), r.attempt, out)),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(job, error = %e, "checkpoint coordinator failed"),
                    }
                }
            }
        }
        for (job, attempt, outputs) in work {
            for output in outputs {
                self.dispatch(&job, attempt, output).await;
            }
        }
    }

    async fn dispatch(&self, job: &str, attempt: u64, output: CoordinatorOutput) {
        let workers: Vec<String> = match self.lock().attempts.get(job) {
            Some(r) if r.attempt == attempt => r.workers.iter().cloned().collect(),
            _ => return,
        };
        match output {
            CoordinatorOutput::Abandoned {
                checkpoint, reason, ..
            } => {
                tracing::warn!(job, checkpoint, %reason, "checkpoint abandoned");
            }
            CoordinatorOutput::Trigger { target, .. } => {
                let id = target.checkpoint;
                if self
                    .propose(Command::ReserveCheckpointIds {
                        job: job.to_string(),
                        up_to: id,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let request = TriggerRequest {
                    job_id: job.to_string(),
                    attempt,
                    checkpoint: id,
                    store_dir: target.store.storage().describe(),
                    incremental: target.incremental,
                };
                for addr in workers {
                    if let Ok(mut c) = worker_client(&addr) {
                        let _ = c.trigger_checkpoint(request.clone()).await;
                    }
                }
            }
            CoordinatorOutput::Completed {
                metadata,
                savepoint,
                duration,
            } => {
                let location = {
                    let soft = self.lock();
                    let savepoint_dir =
                        soft.attempts.get(job).and_then(|r| r.savepoint_dir.clone());
                    match savepoint_dir {
                        Some(dir) if savepoint => dir,
                        _ => self
                            .raft
                            .state()
                            .jobs
                            .get(job)
                            .map(|j| j.spec.checkpoint_dir.clone())
                            .unwrap_or_default(),
                    }
                };
                let record = CheckpointRecord {
                    id: metadata.checkpoint,
                    completed_at_ms: now_ms(),
                    finished: metadata.finished,
                    location,
                    savepoint,
                };
                if self
                    .propose(Command::CheckpointCompleted {
                        job: job.to_string(),
                        attempt,
                        checkpoint: record.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                metrics::histogram!("eddy_checkpoint_duration_seconds", "job" => job.to_string())
                    .record(duration.as_secs_f64());
                metrics::gauge!("eddy_last_checkpoint", "job" => job.to_string())
                    .set(record.id as f64);
                metrics::gauge!("eddy_checkpoint_size_bytes", "job" => job.to_string())
                    .set(metadata.size_bytes() as f64);
                self.lock().failures.remove(job);
                let json = serde_json::to_vec(metadata.as_ref()).unwrap_or_default();
                let request = CompleteRequest {
                    job_id: job.to_string(),
                    attempt,
                    metadata_json: json,
                };
                for addr in &workers {
                    if let Ok(mut c) = worker_client(addr) {
                        let _ = c.checkpoint_complete(request.clone()).await;
                    }
                }
                let (waiters, stop, done) = {
                    let mut soft = self.lock();
                    match soft.attempts.get_mut(job) {
                        Some(r) if r.attempt == attempt => {
                            let waiters = if savepoint {
                                std::mem::take(&mut r.savepoint_waiters)
                            } else {
                                Vec::new()
                            };
                            if metadata.finished {
                                r.final_checkpoint_done = true;
                            }
                            let done =
                                r.final_checkpoint_done && r.ended_ok.len() == r.workers.len();
                            (waiters, savepoint && r.stop_after_savepoint, done)
                        }
                        _ => (Vec::new(), false, false),
                    }
                };
                for w in waiters {
                    let _ = w.send(Ok((record.id, record.location.clone())));
                }
                if stop {
                    if let Some(j) = self.raft.state().jobs.get(job).cloned() {
                        let _ = self.cancel(&j).await;
                    }
                }
                if done {
                    self.finish(job).await;
                }
            }
        }
    }
}

/// Decodes an acknowledgement's subtask states.
pub fn decode_subtasks(json: &[u8]) -> Result<Vec<ReportedSubtask>, String> {
    serde_json::from_slice(json).map_err(|e| format!("bad acknowledgement: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, records_in: u64) -> Vec<TaskStatus> {
        vec![TaskStatus {
            name: "q5".into(),
            subtask: 0,
            worker: 1,
            worker_addr: "127.0.0.1:1".into(),
            state: state.into(),
            records_in,
            records_out: 0,
        }]
    }

    #[test]
    fn a_late_heartbeat_does_not_overwrite_final_counters() {
        let mut soft = Soft::default();
        let workers = HashSet::from(["127.0.0.1:1".to_string()]);
        let run = AttemptRuntime::new(1, Vec::new(), workers, None, Duration::from_secs(1));
        soft.attempts.insert("job-1".into(), run);
        soft.record_metrics("job-1", 1, 1, status("running", 5), CountersFrom::Heartbeat);
        soft.record_metrics("job-1", 1, 1, status("finished", 9), CountersFrom::End);
        soft.record_metrics("job-1", 1, 1, status("running", 7), CountersFrom::Heartbeat);
        // Counters of another attempt are not this one's.
        soft.record_metrics("job-1", 2, 1, status("running", 1), CountersFrom::End);
        assert_eq!(soft.task_statuses("job-1", 1), status("finished", 9));
        soft.forget_attempt("job-1");
        assert_eq!(soft.task_statuses("job-1", 1), status("finished", 9));
    }
}

//! Running: an attempt is deployed. The leader drives its checkpoints (trigger, collect the
//! acknowledgements, publish, record in Raft, prune, commit on every worker until each one
//! confirmed), serves savepoints, and watches its parts end.
//!
//! Commits are retried until every worker confirmed (a commit is idempotent), and nothing
//! newer is triggered meanwhile, so sinks publish in checkpoint order and a commit that failed
//! once (a read-only output directory, PostgreSQL restarting) is never skipped. The job is
//! finished only when its final checkpoint is committed everywhere.

use super::{next_backoff, Driver, Phase};
use crate::job::{Deployment, Failure, JobEvent, SavepointResult};
use crate::now_ms;
use crate::raft::ProposeError;
use crate::state::{CheckpointRecord, Command, JobRecord, JobState};
use eddy_proto::v1::{CompleteRequest, DescribeAttemptRequest, TriggerRequest};
use eddy_runtime::checkpoint::coordinator::{
    CheckpointCoordinator, CoordinatorInput, CoordinatorOutput,
};
use eddy_runtime::checkpoint::{CheckpointMetadata, CheckpointStore};
use eddy_runtime::error::FaultDomain;
use eddy_runtime::exec::checkpoint_coordinator;
use eddy_runtime::graph::JobGraph;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A completed checkpoint that some workers have yet to commit.
struct PendingCommit {
    checkpoint: u64,
    location: String,
    savepoint: bool,
    finished: bool,
    left: BTreeSet<String>,
    next_try: Instant,
    backoff: Duration,
}

/// A trigger that some workers did not receive (a pause, a partition, a dropped call).
/// Without a resend the checkpoint waits for its whole timeout; triggers are idempotent on
/// the workers, so it is sent again at each tick until it arrives or the checkpoint ends
/// (found by the chaos harness: a leader paused while triggering stalled checkpoints 30 s).
struct Undelivered {
    request: TriggerRequest,
    workers: BTreeSet<String>,
    next_try: Instant,
}

/// The checkpoints of an attempt.
struct Checkpoints {
    /// `None` only while it works on a blocking thread.
    coordinator: Option<CheckpointCoordinator>,
    store: CheckpointStore,
    dir: String,
    retain: usize,
    interval: Duration,
    next_tick: Instant,
    commit: Option<PendingCommit>,
    final_done: bool,
    undelivered: Option<Undelivered>,
}

/// A savepoint someone waits for.
struct SavepointRequest {
    dir: String,
    stop: bool,
    reply: oneshot::Sender<SavepointResult>,
}

/// A deployed attempt.
pub(super) struct Running {
    attempt: u64,
    workers: BTreeSet<String>,
    checkpoints: Option<Checkpoints>,
    ended_ok: BTreeSet<String>,
    savepoints: Vec<SavepointRequest>,
}

/// What a step of the attempt led to.
enum Step {
    Continue,
    Failed(Failure),
    /// Raft refused or the job ended (cancelled): stop driving.
    Done,
}

impl Running {
    /// A just-deployed attempt of `job`.
    pub fn deployed(
        driver: &Driver,
        job: &JobRecord,
        graph: &JobGraph,
        attempt: u64,
        workers: BTreeSet<String>,
    ) -> Running {
        Running {
            attempt,
            workers,
            checkpoints: checkpoints(driver, job, graph),
            ended_ok: BTreeSet::new(),
            savepoints: Vec::new(),
        }
    }

    pub async fn tick(mut self: Box<Self>, driver: &mut Driver) -> Phase {
        let step = self.step_tick(driver).await;
        self.after(step, driver).await
    }

    pub async fn on(mut self: Box<Self>, event: JobEvent, driver: &mut Driver) -> Phase {
        let step = match event {
            JobEvent::Ack { attempt, input } if attempt == self.attempt => {
                self.handle(input, driver).await
            }
            JobEvent::Ack { .. } => Step::Continue,
            JobEvent::PartEnded {
                attempt,
                addr,
                report,
            } if attempt == self.attempt => {
                if !report.failed {
                    self.ended_ok.insert(addr);
                    self.maybe_finish(driver).await
                } else if report.cancelled {
                    Step::Failed(Failure::transient(format!(
                        "the attempt was cancelled on worker {addr}"
                    )))
                } else {
                    Step::Failed(Failure {
                        domain: report.fault_domain(),
                        message: report.error,
                    })
                }
            }
            JobEvent::PartEnded { .. } => Step::Continue,
            JobEvent::WorkerLost { addr, reason } if self.workers.contains(&addr) => {
                Step::Failed(Failure::transient(reason))
            }
            JobEvent::WorkerLost { .. } => Step::Continue,
            JobEvent::Cancel(reply) => {
                let result = driver.cancel(Some((self.attempt, &self.workers))).await;
                let done = result.is_ok();
                let _ = reply.send(result);
                if done {
                    self.fail_savepoints("the job was cancelled");
                    return Phase::Done;
                }
                Step::Continue
            }
            JobEvent::Savepoint { dir, stop, reply } => {
                self.savepoint(dir, stop, reply, driver).await
            }
        };
        self.after(step, driver).await
    }

    async fn after(mut self: Box<Self>, step: Step, driver: &mut Driver) -> Phase {
        match step {
            Step::Continue => Phase::Running(self),
            Step::Done => {
                self.fail_savepoints("the job ended");
                Phase::Done
            }
            Step::Failed(failure) => {
                self.fail_savepoints("the job restarted before the savepoint completed");
                driver
                    .after_failure(self.attempt, &self.workers, failure)
                    .await
            }
        }
    }

    fn fail_savepoints(&mut self, why: &str) {
        for s in self.savepoints.drain(..) {
            let _ = s
                .reply
                .send(Err(crate::error::CoordinatorError::State(why.to_string())));
        }
    }

    /// The periodic work: retry a pending commit, or trigger the next checkpoint.
    async fn step_tick(&mut self, driver: &mut Driver) -> Step {
        let Some(c) = self.checkpoints.as_mut() else {
            return Step::Continue;
        };
        if let Some(commit) = &c.commit {
            if Instant::now() >= commit.next_try {
                return self.commit(driver).await;
            }
            return Step::Continue;
        }
        if let Some(u) = &c.undelivered {
            let pending = c
                .coordinator
                .as_ref()
                .and_then(|co| co.in_flight())
                .is_some_and(|(id, _)| id == u.request.checkpoint);
            if !pending {
                c.undelivered = None;
            } else if Instant::now() >= u.next_try {
                let u = c.undelivered.take().expect("checked above");
                let step = self.send_trigger(u.request, u.workers, driver).await;
                if !matches!(step, Step::Continue) {
                    return step;
                }
            }
        }
        let Some(c) = self.checkpoints.as_mut() else {
            return Step::Continue;
        };
        if Instant::now() < c.next_tick {
            return Step::Continue;
        }
        c.next_tick = Instant::now() + c.interval;
        match self.coordinate(CoordinatorInput::Tick, driver).await {
            // Checkpoints that keep timing out: a worker is stuck or its messages are lost.
            Err(e) => Step::Failed(Failure::transient(e.to_string())),
            Ok(outputs) => self.act(outputs, driver).await,
        }
    }

    /// A task's acknowledgement or end-of-input report.
    async fn handle(&mut self, input: CoordinatorInput, driver: &mut Driver) -> Step {
        if self.checkpoints.is_none() {
            return Step::Continue;
        }
        match self.coordinate(input, driver).await {
            Err(e) => Step::Failed(Failure {
                domain: e.domain(),
                message: format!("checkpointing failed: {e}"),
            }),
            Ok(outputs) => {
                let step = self.act(outputs, driver).await;
                match step {
                    Step::Continue => self.maybe_finish(driver).await,
                    other => other,
                }
            }
        }
    }

    /// Feeds the checkpoint coordinator on a blocking thread (a completion publishes the
    /// metadata: a file write and syncs, which must not stall the async runtime).
    async fn coordinate(
        &mut self,
        input: CoordinatorInput,
        _driver: &Driver,
    ) -> Result<Vec<CoordinatorOutput>, eddy_runtime::checkpoint::CheckpointError> {
        let c = self.checkpoints.as_mut().expect("checked by the callers");
        let Some(mut coordinator) = c.coordinator.take() else {
            return Ok(Vec::new());
        };
        let (coordinator, result) = tokio::task::spawn_blocking(move || {
            let result = coordinator.handle(input);
            (coordinator, result)
        })
        .await
        .map_err(|e| eddy_runtime::checkpoint::CheckpointError::Failed(e.to_string()))?;
        c.coordinator = Some(coordinator);
        result
    }

    async fn act(&mut self, outputs: Vec<CoordinatorOutput>, driver: &mut Driver) -> Step {
        for output in outputs {
            let step = match output {
                CoordinatorOutput::Trigger { target, .. } => {
                    self.trigger(
                        target.checkpoint,
                        target.store.storage().describe(),
                        target.incremental,
                        driver,
                    )
                    .await
                }
                CoordinatorOutput::Abandoned {
                    checkpoint,
                    savepoint,
                    reason,
                } => {
                    tracing::warn!(job = %driver.job, checkpoint, %reason, "checkpoint abandoned");
                    metrics::counter!("eddy_checkpoints_abandoned_total", "job" => driver.job.clone())
                        .increment(1);
                    if savepoint {
                        self.fail_savepoints(&format!("the savepoint did not complete: {reason}"));
                    }
                    Step::Continue
                }
                CoordinatorOutput::Completed {
                    metadata,
                    savepoint,
                    duration,
                } => self.completed(metadata, savepoint, duration, driver).await,
            };
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        Step::Continue
    }

    async fn trigger(
        &mut self,
        checkpoint: u64,
        store_dir: String,
        incremental: bool,
        driver: &mut Driver,
    ) -> Step {
        let ctx = &driver.ctx;
        // The id is taken in Raft before any barrier carries it: never reused.
        match ctx
            .raft
            .propose(Command::ReserveCheckpointIds {
                job: driver.job.clone(),
                up_to: checkpoint,
            })
            .await
        {
            Ok(_) => {}
            Err(ProposeError::Rejected(_)) => return Step::Done,
            // Not the leader any more: the next one takes over.
            Err(_) => return Step::Continue,
        }
        let request = TriggerRequest {
            job_id: driver.job.clone(),
            attempt: self.attempt,
            checkpoint,
            store_dir,
            incremental,
            term: ctx.raft.term(),
        };
        let workers = self.workers.clone();
        self.send_trigger(request, workers, driver).await
    }

    /// Sends `request` to `workers`; those it did not reach get it again at a later tick.
    async fn send_trigger(
        &mut self,
        request: TriggerRequest,
        workers: BTreeSet<String>,
        driver: &mut Driver,
    ) -> Step {
        let ctx = &driver.ctx;
        let checkpoint = request.checkpoint;
        let mut missed = BTreeSet::new();
        for (addr, result) in ctx
            .workers
            .call_all(workers, ctx.options.rpc_timeout, |_, mut c| {
                let r = request.clone();
                async move { c.trigger_checkpoint(r).await }
            })
            .await
        {
            match result {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {
                    return Step::Failed(Failure::transient(format!(
                        "worker {addr} no longer runs attempt {}",
                        self.attempt
                    )))
                }
                Err(s) => {
                    tracing::debug!(job = %driver.job, checkpoint, %addr, error = %s.message(), "trigger not delivered; resending");
                    missed.insert(addr);
                }
            }
        }
        if let Some(c) = self.checkpoints.as_mut() {
            c.undelivered = (!missed.is_empty()).then(|| Undelivered {
                request,
                workers: missed,
                next_try: Instant::now() + ctx.options.tick,
            });
        }
        Step::Continue
    }

    async fn completed(
        &mut self,
        metadata: Arc<CheckpointMetadata>,
        savepoint: bool,
        duration: Duration,
        driver: &mut Driver,
    ) -> Step {
        let ctx = &driver.ctx;
        let c = self.checkpoints.as_mut().expect("only with checkpoints");
        let location = match (savepoint, self.savepoints.first()) {
            (true, Some(s)) => s.dir.clone(),
            _ => c.dir.clone(),
        };
        let record = CheckpointRecord {
            id: metadata.checkpoint,
            completed_at_ms: now_ms(),
            finished: metadata.finished,
            location: location.clone(),
            savepoint,
        };
        match ctx
            .raft
            .propose(Command::CheckpointCompleted {
                job: driver.job.clone(),
                attempt: self.attempt,
                checkpoint: record.clone(),
            })
            .await
        {
            Ok(_) => {}
            // The attempt is stale or the job is over: its output must not be committed.
            Err(ProposeError::Rejected(reason)) => {
                tracing::warn!(job = %driver.job, checkpoint = record.id, %reason, "checkpoint not recorded");
                return Step::Done;
            }
            // Cut off from the other coordinators: nothing is committed or pruned until a
            // leader that can record it does.
            Err(e) => {
                tracing::warn!(job = %driver.job, checkpoint = record.id, error = %e, "checkpoint not recorded");
                return Step::Continue;
            }
        }
        let job = driver.job.clone();
        metrics::histogram!("eddy_checkpoint_duration_seconds", "job" => job.clone())
            .record(duration.as_secs_f64());
        metrics::gauge!("eddy_last_checkpoint", "job" => job.clone()).set(record.id as f64);
        metrics::gauge!("eddy_checkpoint_size_bytes", "job" => job.clone())
            .set(metadata.size_bytes() as f64);
        driver.restart.on_progress();
        if !savepoint {
            // Only now that Raft records the new checkpoint may older ones go: a new leader
            // restores the one Raft holds.
            let store = c.store.clone();
            let retain = c.retain;
            let pruned = tokio::task::spawn_blocking(move || store.prune(retain)).await;
            if let Ok(Err(e)) = pruned {
                tracing::warn!(job, error = %e, "cannot prune old checkpoints");
            }
        }
        if metadata.finished {
            c.final_done = true;
        }
        c.commit = Some(PendingCommit {
            checkpoint: record.id,
            location,
            savepoint,
            finished: metadata.finished,
            left: self.workers.clone(),
            next_try: Instant::now(),
            backoff: Duration::ZERO,
        });
        self.commit(driver).await
    }

    /// Asks every worker that has not confirmed the pending commit to make it.
    async fn commit(&mut self, driver: &mut Driver) -> Step {
        let ctx = &driver.ctx;
        let c = self.checkpoints.as_mut().expect("only with checkpoints");
        let Some(commit) = c.commit.as_mut() else {
            return Step::Continue;
        };
        let request = CompleteRequest {
            job_id: driver.job.clone(),
            attempt: self.attempt,
            metadata_json: Vec::new(),
            checkpoint: commit.checkpoint,
            location: commit.location.clone(),
        };
        let outcomes = ctx
            .workers
            .call_all(
                commit.left.iter().cloned(),
                ctx.options.commit_timeout,
                |_, mut c| {
                    let r = request.clone();
                    async move { c.checkpoint_complete(r).await }
                },
            )
            .await;
        for (addr, result) in outcomes {
            match result {
                Ok(_) => {
                    commit.left.remove(&addr);
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    // The worker no longer runs the attempt (it restarted): a new attempt's
                    // restore commits this checkpoint.
                    return Step::Failed(Failure::transient(format!(
                        "worker {addr} cannot commit checkpoint {}: {}",
                        commit.checkpoint,
                        s.message()
                    )));
                }
                Err(s) if eddy_proto::convert::domain_of(&s) == FaultDomain::User => {
                    return Step::Failed(Failure {
                        domain: FaultDomain::User,
                        message: format!(
                            "committing checkpoint {} failed: {}",
                            commit.checkpoint,
                            s.message()
                        ),
                    });
                }
                Err(s) => {
                    tracing::warn!(job = %driver.job, checkpoint = commit.checkpoint, %addr, error = %s.message(), "commit failed; retrying");
                }
            }
        }
        if !commit.left.is_empty() {
            commit.backoff = next_backoff(commit.backoff);
            commit.next_try = Instant::now() + commit.backoff;
            return Step::Continue;
        }
        let done = c.commit.take().expect("checked above");
        tracing::debug!(job = %driver.job, checkpoint = done.checkpoint, "committed");
        if done.savepoint {
            let stop = self.savepoints.iter().any(|s| s.stop);
            for s in self.savepoints.drain(..) {
                let _ = s.reply.send(Ok((done.checkpoint, done.location.clone())));
            }
            if stop {
                return match driver.cancel(Some((self.attempt, &self.workers))).await {
                    Ok(()) => Step::Done,
                    Err(e) => {
                        tracing::warn!(job = %driver.job, error = %e, "cannot stop after the savepoint");
                        Step::Continue
                    }
                };
            }
        }
        let _ = done.finished;
        self.maybe_finish(driver).await
    }

    /// Finishes the job once every part ended well and its final checkpoint (if any) is
    /// committed everywhere.
    async fn maybe_finish(&mut self, driver: &mut Driver) -> Step {
        if self.ended_ok.len() < self.workers.len() {
            return Step::Continue;
        }
        if let Some(c) = &self.checkpoints {
            if !c.final_done || c.commit.is_some() {
                return Step::Continue;
            }
        }
        let ctx = &driver.ctx;
        match ctx
            .raft
            .propose(Command::SetJobState {
                job: driver.job.clone(),
                state: JobState::Finished,
                message: String::new(),
            })
            .await
        {
            Ok(_) | Err(ProposeError::Rejected(_)) => {}
            Err(_) => return Step::Continue,
        }
        // Frees the workers' records of the attempt.
        super::stop_attempt(&driver.ctx, &driver.job, self.attempt, &self.workers).await;
        tracing::info!(job = %driver.job, "finished");
        Step::Done
    }

    async fn savepoint(
        &mut self,
        dir: String,
        stop: bool,
        reply: oneshot::Sender<SavepointResult>,
        driver: &mut Driver,
    ) -> Step {
        if self.checkpoints.is_none() {
            let _ = reply.send(Err(crate::error::CoordinatorError::State(format!(
                "{} runs without checkpoints (submit it with --checkpoint-interval)",
                driver.job
            ))));
            return Step::Continue;
        }
        let path = std::path::PathBuf::from(&dir);
        let store =
            match tokio::task::spawn_blocking(move || CheckpointStore::open_dir(&path)).await {
                Ok(Ok(store)) => store,
                Ok(Err(e)) => {
                    let _ = reply.send(Err(e.into()));
                    return Step::Continue;
                }
                Err(e) => {
                    let _ = reply.send(Err(crate::error::CoordinatorError::State(e.to_string())));
                    return Step::Continue;
                }
            };
        self.savepoints.push(SavepointRequest { dir, stop, reply });
        match self
            .coordinate(CoordinatorInput::Savepoint(store), driver)
            .await
        {
            Err(e) => {
                self.fail_savepoints(&e.to_string());
                Step::Continue
            }
            Ok(outputs) => self.act(outputs, driver).await,
        }
    }
}

/// The checkpoint side of an attempt of `job`, if it checkpoints.
fn checkpoints(driver: &Driver, job: &JobRecord, graph: &JobGraph) -> Option<Checkpoints> {
    if job.spec.checkpoint_interval_ms == 0 {
        return None;
    }
    let store = match CheckpointStore::open_dir(std::path::Path::new(&job.spec.checkpoint_dir)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "cannot open the checkpoint directory");
            return None;
        }
    };
    let retain = job.spec.retain_checkpoints.max(1) as usize;
    let coordinator = checkpoint_coordinator(
        graph,
        store.clone(),
        retain,
        job.max_checkpoint_id + 1,
        driver.ctx.options.checkpoints,
        false,
    );
    let interval = Duration::from_millis(job.spec.checkpoint_interval_ms.max(1));
    Some(Checkpoints {
        coordinator: Some(coordinator),
        store,
        dir: job.spec.checkpoint_dir.clone(),
        retain,
        interval,
        next_tick: Instant::now() + interval,
        commit: None,
        final_done: false,
        undelivered: None,
    })
}

/// Adopts the attempt a previous leader started: every worker of it must still run it (or
/// have ended it); the end-of-input reports they sent are fed in again, and the last
/// recorded checkpoint is committed again (the previous leader may have died before every
/// worker committed it). Fails when the attempt cannot be adopted whole.
pub(super) async fn adopt(driver: &mut Driver, job: &JobRecord) -> Result<Running, Failure> {
    let spec = driver.ctx.unseal(&job.spec).map_err(|message| Failure {
        domain: FaultDomain::User,
        message,
    })?;
    let graph = tokio::task::spawn_blocking(move || spec.compile())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?
        .map_err(|e| Failure {
            domain: FaultDomain::User,
            message: e.to_string(),
        })?;
    let deployment = driver
        .ctx
        .raft
        .with_state(|s| Deployment::plan(&graph, &job.slots, s))
        .ok_or_else(|| Failure::transient("a worker of the attempt is no longer registered"))?;
    let workers = deployment.workers();
    let request = DescribeAttemptRequest {
        job_id: job.id.clone(),
        attempt: job.attempt,
        term: driver.ctx.raft.term(),
    };
    let ctx = &driver.ctx;
    let described = ctx
        .workers
        .call_all(
            workers.iter().cloned(),
            ctx.options.rpc_timeout,
            |_, mut c| {
                let r = request.clone();
                async move { c.describe_attempt(r).await }
            },
        )
        .await;
    let mut running = Running::deployed(driver, job, &graph, job.attempt, workers);
    let mut outputs = Vec::new();
    for (addr, result) in described {
        let d = result.map_err(|s| {
            Failure::transient(format!(
                "worker {addr} did not say what it runs: {}",
                s.message()
            ))
        })?;
        if !d.known {
            return Err(Failure::transient(format!(
                "worker {addr} no longer runs attempt {}",
                job.attempt
            )));
        }
        if let Some(end) = d.end.filter(|_| d.ended) {
            if end.failed {
                return Err(Failure {
                    domain: end.fault_domain(),
                    message: end.error,
                });
            }
            running.ended_ok.insert(addr.clone());
        }
        for ack in d.finished {
            let subtasks = crate::api::decode_subtasks(&ack.subtasks_json)
                .map_err(|e| Failure::transient(format!("worker {addr}: {e}")))?;
            let input = CoordinatorInput::Finished {
                task: ack.task as usize,
                subtasks,
            };
            if running.checkpoints.is_some() {
                outputs.extend(
                    running
                        .coordinate(input, driver)
                        .await
                        .map_err(|e| Failure::transient(e.to_string()))?,
                );
            }
        }
    }
    if let (Some(c), Some(last)) = (running.checkpoints.as_mut(), job.last_checkpoint.as_ref()) {
        c.commit = Some(PendingCommit {
            checkpoint: last.id,
            location: last.location.clone(),
            savepoint: false,
            finished: last.finished,
            left: running.workers.clone(),
            next_try: Instant::now(),
            backoff: Duration::ZERO,
        });
        c.final_done = last.finished;
    }
    // A final checkpoint the reports completed now is recorded and committed like any.
    match running.act(outputs, driver).await {
        Step::Failed(f) => Err(f),
        Step::Done => Err(Failure::transient("the job ended while it was adopted")),
        Step::Continue => Ok(running),
    }
}

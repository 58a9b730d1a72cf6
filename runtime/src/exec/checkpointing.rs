//! Checkpoint plumbing of the local executor: the channels between tasks, the upload thread and
//! the thread that drives the [`CheckpointCoordinator`].
//!
//! ```text
//!  driver ──trigger──▶ source tasks ──barriers──▶ downstream tasks
//!    ▲                      │ sync snapshot             │ sync snapshot
//!    │                      ▼                           ▼
//!    └──ack / finished── uploader (async part: copies files to checkpoint storage)
//! ```
//! Every message between these parts is a value sent over a channel, so the driver's side can
//! move to the cluster coordinator and the task side into workers.

use super::{CancelHandle, CheckpointSettings, CompletedCheckpoint, ExecError, TaskFactory};
use crate::checkpoint::coordinator::{CoordinatorInput, CoordinatorOutput, ReportedSubtask};
use crate::checkpoint::{
    CheckpointError, CheckpointId, PendingKeyedUpload, SnapshotPoint, SubtaskState, UploadTarget,
};
use crate::graph::{JobGraph, NodeId};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// The synchronous snapshot of one operator subtask, its upload still to do.
pub(super) struct PendingSubtask {
    pub node: NodeId,
    pub state: SubtaskState,
    pub keyed: Option<PendingKeyedUpload>,
}

/// A task's snapshot, on its way to the uploader.
struct Report {
    task: usize,
    point: SnapshotPoint,
    subtasks: Vec<PendingSubtask>,
}

/// The channels of a job, created while its tasks are built.
pub(super) struct Wiring {
    reports: Option<(Sender<Report>, Receiver<Report>)>,
    /// Per global task index: where its triggers go, for source tasks that run here.
    triggers: Vec<Option<Sender<CheckpointId>>>,
}

impl Wiring {
    /// Wiring for a job of `tasks` task subtasks.
    pub fn new(tasks: usize) -> Wiring {
        Wiring {
            reports: None,
            triggers: vec![None; tasks],
        }
    }

    /// The checkpoint ends of the task with global index `index`.
    pub fn task(&mut self, index: usize, is_source: bool) -> TaskCheckpointing {
        let reports = self.reports.get_or_insert_with(unbounded).0.clone();
        let triggers = is_source.then(|| {
            let (tx, rx) = unbounded();
            self.triggers[index] = Some(tx);
            rx
        });
        TaskCheckpointing {
            triggers,
            reports,
            last_trigger: std::cell::Cell::new(0),
        }
    }
}

/// What a task holds to take part in checkpoints.
pub(super) struct TaskCheckpointing {
    triggers: Option<Receiver<CheckpointId>>,
    reports: Sender<Report>,
    /// The newest checkpoint this source task started: a trigger repeated or overtaken by a
    /// newer one (a coordinator that retried, or a new leader) starts nothing.
    last_trigger: std::cell::Cell<CheckpointId>,
}

impl TaskCheckpointing {
    /// A checkpoint to start, for source tasks.
    pub fn next_trigger(&self) -> Option<CheckpointId> {
        let triggers = self.triggers.as_ref()?;
        loop {
            let id = triggers.try_recv().ok()?;
            if id > self.last_trigger.get() {
                self.last_trigger.set(id);
                return Some(id);
            }
        }
    }

    /// Hands a snapshot to the uploader.
    pub fn report(
        &self,
        task: usize,
        point: SnapshotPoint,
        subtasks: Vec<PendingSubtask>,
    ) -> Result<(), ExecError> {
        self.reports
            .send(Report {
                task,
                point,
                subtasks,
            })
            .map_err(|_| {
                ExecError::Checkpoint(CheckpointError::Failed(
                    "the checkpoint uploader stopped".into(),
                ))
            })
    }
}

/// Where each checkpoint in flight is written, for the uploader.
pub(super) type Targets = Mutex<HashMap<CheckpointId, UploadTarget>>;

enum DriverMsg {
    Input(CoordinatorInput),
    Stop,
}

/// The running checkpoint threads of a job.
pub(super) struct Coordination<'scope> {
    reports: Sender<Report>,
    uploader: ScopedJoinHandle<'scope, ()>,
    /// The driver, when checkpoints are coordinated in this process.
    driver: Option<(
        Sender<DriverMsg>,
        ScopedJoinHandle<'scope, Vec<CompletedCheckpoint>>,
    )>,
}

impl Coordination<'_> {
    /// After every task thread has ended: lets the uploader drain, then the driver, and returns
    /// the checkpoints completed.
    pub fn finish(self) -> Vec<CompletedCheckpoint> {
        drop(self.reports);
        let _ = self.uploader.join();
        match self.driver {
            Some((inbox, driver)) => {
                let _ = inbox.send(DriverMsg::Stop);
                driver.join().unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

/// Starts the uploader of a job whose checkpoints a coordinator elsewhere drives through
/// `link`: triggers come from it, acknowledgements go to it.
pub(super) fn start_remote<'scope, 'env, F>(
    scope: &'scope Scope<'scope, 'env>,
    link: std::sync::Arc<dyn super::CheckpointLink>,
    mut wiring: Wiring,
    fail: &'env F,
) -> Coordination<'scope>
where
    F: Fn(ExecError) + Sync,
{
    let (reports_tx, reports_rx) = wiring.reports.take().unwrap_or_else(unbounded);
    let sources = wiring
        .triggers
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t)))
        .collect();
    link.register_sources(sources);
    let uploader = scope.spawn(move || {
        upload(
            reports_rx,
            &|id| link.target(id),
            &|input| link.acknowledge(input),
            fail,
        )
    });
    Coordination {
        reports: reports_tx,
        uploader,
        driver: None,
    }
}

/// What the checkpoint threads of a job share with the executor, borrowed for the run.
pub(super) struct JobEnv<'a, F> {
    pub settings: &'a CheckpointSettings,
    pub graph: &'a JobGraph,
    pub factory: &'a dyn TaskFactory,
    pub cancel: &'a CancelHandle,
    pub targets: &'a Targets,
    /// Records an error and cancels the job.
    pub fail: &'a F,
}

impl<F> Clone for JobEnv<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for JobEnv<'_, F> {}

/// Starts the uploader and the driver of a job's checkpoints.
pub(super) fn start<'scope, 'env, F>(
    scope: &'scope Scope<'scope, 'env>,
    env: JobEnv<'env, F>,
    mut wiring: Wiring,
) -> Coordination<'scope>
where
    F: Fn(ExecError) + Sync,
{
    let (reports_tx, reports_rx) = wiring.reports.take().unwrap_or_else(unbounded);
    let (driver_tx, driver_rx) = unbounded();
    let uploader = {
        let driver_tx = driver_tx.clone();
        scope.spawn(move || {
            let target = |id| {
                env.targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned()
            };
            let acknowledge = |input| {
                let _ = driver_tx.send(DriverMsg::Input(input));
            };
            upload(reports_rx, &target, &acknowledge, env.fail)
        })
    };
    let driver = scope.spawn(move || drive(env, wiring.triggers, driver_rx));
    Coordination {
        reports: reports_tx,
        uploader,
        driver: Some((driver_tx, driver)),
    }
}

/// The asynchronous part of snapshots: uploads keyed state, then acknowledges to the driver.
fn upload(
    reports: Receiver<Report>,
    target_of: &dyn Fn(CheckpointId) -> Option<UploadTarget>,
    acknowledge: &dyn Fn(CoordinatorInput),
    fail: &(impl Fn(ExecError) + Sync),
) {
    // Where end-of-input states go when large: the storage of the latest checkpoint.
    let mut last_store: Option<crate::checkpoint::CheckpointStore> = None;
    let run = std::process::id();
    for report in reports.iter() {
        let target = match report.point {
            SnapshotPoint::Barrier(id) => target_of(id),
            SnapshotPoint::EndOfInput => None,
        };
        if let Some(t) = &target {
            last_store = Some(t.store.clone());
        }
        let mut subtasks = Vec::with_capacity(report.subtasks.len());
        for pending in report.subtasks {
            let mut state = pending.state;
            // Large operator state goes to storage, the report carries a reference.
            let stored = match (&target, &last_store) {
                (Some(t), _) => Some((
                    t.store.clone(),
                    format!(
                        "{}/state-{}-{}.json",
                        crate::checkpoint::store::checkpoint_dir(t.checkpoint),
                        pending.node,
                        state.subtask
                    ),
                )),
                // An end-of-input state stands in for the task in every later checkpoint: it
                // is kept apart, where pruning never reaches.
                (None, Some(store)) => Some((
                    store.clone(),
                    format!(
                        "finished/state-{}-{}-{:x}-{}.json",
                        pending.node, state.subtask, run, report.task
                    ),
                )),
                (None, None) => None,
            };
            if let Some((store, key)) = stored {
                let value = std::mem::take(&mut state.state);
                match crate::checkpoint::store::store_large_state(store.storage(), &key, value) {
                    Ok(v) => state.state = v,
                    Err(e) => {
                        fail(ExecError::Checkpoint(e));
                        return;
                    }
                }
            }
            if let (Some(upload), Some(target)) = (pending.keyed, &target) {
                match upload(target) {
                    Ok(handle) => {
                        crash_point(target.checkpoint);
                        state.keyed = Some(handle)
                    }
                    Err(e) => {
                        fail(ExecError::Checkpoint(e));
                        return;
                    }
                }
            }
            subtasks.push(ReportedSubtask {
                node: pending.node,
                state,
            });
        }
        let input = match report.point {
            SnapshotPoint::Barrier(checkpoint) => CoordinatorInput::Ack {
                checkpoint,
                task: report.task,
                subtasks,
            },
            SnapshotPoint::EndOfInput => CoordinatorInput::Finished {
                task: report.task,
                subtasks,
            },
        };
        acknowledge(input);
    }
}

/// A fault-injection hook for crash tests and the chaos harness: with
/// `EDDY_CRASH_IN_CHECKPOINT=N` the process aborts in the middle of writing checkpoint N (some
/// of its files stored, its metadata not), as a kill -9 or power cut at that moment would.
fn crash_point(checkpoint: CheckpointId) {
    static AT: std::sync::OnceLock<Option<CheckpointId>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("EDDY_CRASH_IN_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(checkpoint) {
        tracing::error!(checkpoint, "EDDY_CRASH_IN_CHECKPOINT: aborting");
        std::process::abort();
    }
}

/// How often the driver looks at the stop flag while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Runs the coordinator: ticks, triggers, completions and the commits that follow them.
fn drive<F: Fn(ExecError) + Sync>(
    env: JobEnv<'_, F>,
    triggers: Vec<Option<Sender<CheckpointId>>>,
    inbox: Receiver<DriverMsg>,
) -> Vec<CompletedCheckpoint> {
    let JobEnv {
        settings,
        graph,
        factory,
        cancel,
        targets,
        fail,
    } = env;
    let mut coordinator = super::placement::checkpoint_coordinator(
        graph,
        settings.store.clone(),
        settings.retain,
        settings.first_id,
        settings.limits,
        true,
    );
    let mut completed = Vec::new();
    let mut next_tick = Instant::now() + settings.interval;
    let mut stop_handled = false;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let mut inputs = Vec::new();
        if cancel.stop_requested() && !stop_handled {
            stop_handled = true;
            match &settings.savepoint_on_stop {
                Some(store) => inputs.push(CoordinatorInput::Savepoint(store.clone())),
                None => cancel.cancel(),
            }
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(POLL);
        match inbox.recv_timeout(wait) {
            Ok(DriverMsg::Input(input)) => inputs.push(input),
            Ok(DriverMsg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if Instant::now() >= next_tick {
                    next_tick = Instant::now() + settings.interval;
                    inputs.push(CoordinatorInput::Tick);
                }
            }
        }
        for input in inputs {
            let outputs = match coordinator.handle(input) {
                Ok(outputs) => outputs,
                Err(e) => {
                    fail(ExecError::Checkpoint(e));
                    return completed;
                }
            };
            for output in outputs {
                match output {
                    CoordinatorOutput::Trigger { target, sources } => {
                        let id = target.checkpoint;
                        // The id is taken before any barrier carries it (never reused).
                        if let Err(e) = settings.store.reserve(id) {
                            fail(ExecError::Checkpoint(e));
                            return completed;
                        }
                        targets
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, target);
                        for task in sources {
                            if let Some(Some(tx)) = triggers.get(task) {
                                let _ = tx.send(id);
                            }
                        }
                    }
                    CoordinatorOutput::Abandoned {
                        checkpoint, reason, ..
                    } => {
                        targets
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&checkpoint);
                        tracing::warn!(checkpoint, %reason, "checkpoint abandoned");
                    }
                    CoordinatorOutput::Completed {
                        metadata,
                        savepoint,
                        duration,
                    } => {
                        targets
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&metadata.checkpoint);
                        let store = match &settings.savepoint_on_stop {
                            Some(s) if savepoint => s,
                            _ => &settings.store,
                        };
                        let location = store.storage().describe();
                        if savepoint {
                            if let Err(e) = settings
                                .store
                                .record_savepoint(metadata.checkpoint, &location)
                            {
                                fail(ExecError::Checkpoint(e));
                                return completed;
                            }
                        }
                        if let Err(e) = super::commit_checkpoint(factory, graph, &metadata, store) {
                            fail(ExecError::Checkpoint(e));
                            return completed;
                        }
                        tracing::info!(
                            checkpoint = metadata.checkpoint,
                            savepoint,
                            finished = metadata.finished,
                            ms = duration.as_millis() as u64,
                            "checkpoint complete"
                        );
                        completed.push(CompletedCheckpoint {
                            id: metadata.checkpoint,
                            duration,
                            savepoint,
                            finished: metadata.finished,
                            location,
                        });
                        if savepoint && cancel.stop_requested() {
                            cancel.cancel();
                        }
                    }
                }
            }
        }
    }
    completed
}

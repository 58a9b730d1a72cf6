//! Job attempts deployed on this worker: building their tasks, wiring them to the network and
//! to the leader's checkpoint coordinator, and reporting how they end.

use crate::error::WorkerError;
use crate::exchange::{GrpcNetwork, Inlets};
use eddy_jobs::Submission;
use eddy_operators::checkpointing::{Restored, RocksOptions, StateBackendChoice};
use eddy_operators::{Factory, RunSettings};
use eddy_proto::v1::{AttemptEndedRequest, CheckpointAck, DeployRequest};
use eddy_runtime::checkpoint::coordinator::{CoordinatorInput, ReportedSubtask};
use eddy_runtime::checkpoint::{CheckpointId, CheckpointMetadata, CheckpointStore, UploadTarget};
use eddy_runtime::exec::{
    commit_checkpoint_where, execute, task_layout, CancelHandle, CheckpointLink, ExecError,
    ExecOptions, LiveStats, Placement, TaskHost,
};
use eddy_runtime::graph::{JobGraph, NodeId};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Identifies a job attempt.
pub type AttemptKey = (String, u64);

/// The source tasks' trigger inboxes, or, until the tasks registered them, the newest trigger
/// that arrived before: a trigger right after the deployment must not be lost.
enum Triggers {
    Waiting(Option<CheckpointId>),
    Registered(HashMap<usize, crossbeam_channel::Sender<CheckpointId>>),
}

/// Where an attempt's checkpoint triggers and acknowledgements go.
pub struct Link {
    job: String,
    attempt: u64,
    triggers: Mutex<Triggers>,
    /// Each triggered checkpoint's target and the Raft term of the leader that triggered it.
    targets: Mutex<HashMap<CheckpointId, (UploadTarget, u64)>>,
    /// The newest leader term heard of for this attempt (triggers, adoption).
    term: std::sync::atomic::AtomicU64,
    acks: mpsc::UnboundedSender<CheckpointAck>,
    /// The end-of-input reports sent so far: a new leader that adopts the attempt asks for
    /// them (the old leader may have died with them).
    finished: Mutex<Vec<CheckpointAck>>,
}

impl Link {
    /// A leader of `term` drives this attempt: end-of-input reports from now on carry it, so
    /// that a deposed leader cannot swallow them (the new one would wait for them forever).
    pub fn observe_term(&self, term: u64) {
        self.term
            .fetch_max(term, std::sync::atomic::Ordering::Relaxed);
    }

    /// The end-of-input reports of the tasks that finished here.
    pub fn finished_reports(&self) -> Vec<CheckpointAck> {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Link {
    /// A checkpoint was triggered: remember where it goes and start it at the local sources
    /// (or as soon as they registered). A repeated trigger is harmless: sources start each
    /// checkpoint once.
    ///
    /// `term`: the triggering leader's Raft term, which the acknowledgements carry, so that a
    /// coordinator deposed without knowing it yet turns them away (to the leader that waits
    /// for them) instead of swallowing them: that stalled checkpoints for their whole timeout
    /// after a pause or an isolation of the leader (found by the chaos harness).
    pub fn trigger(&self, target: UploadTarget, term: u64) {
        self.observe_term(term);
        let id = target.checkpoint;
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (target, term));
        match &mut *self.triggers.lock().unwrap_or_else(|e| e.into_inner()) {
            Triggers::Waiting(newest) => *newest = (*newest).max(Some(id)),
            Triggers::Registered(inboxes) => {
                for tx in inboxes.values() {
                    let _ = tx.send(id);
                }
            }
        }
    }
}

impl CheckpointLink for Link {
    fn register_sources(&self, triggers: HashMap<usize, crossbeam_channel::Sender<CheckpointId>>) {
        let mut current = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        if let Triggers::Waiting(Some(id)) = *current {
            for tx in triggers.values() {
                let _ = tx.send(id);
            }
        }
        *current = Triggers::Registered(triggers);
    }

    fn target(&self, id: CheckpointId) -> Option<UploadTarget> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|(target, _)| target.clone())
    }

    fn acknowledge(&self, input: CoordinatorInput) {
        let (checkpoint, task, finished, subtasks) = match input {
            CoordinatorInput::Ack {
                checkpoint,
                task,
                subtasks,
            } => (checkpoint, task, false, subtasks),
            CoordinatorInput::Finished { task, subtasks } => (0, task, true, subtasks),
            _ => return,
        };
        let subtasks: Vec<ReportedSubtask> = subtasks;
        let json = serde_json::to_vec(&subtasks).unwrap_or_default();
        let term = match finished {
            true => self.term.load(std::sync::atomic::Ordering::Relaxed),
            false => self
                .targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&checkpoint)
                .map_or(0, |(_, term)| *term),
        };
        let ack = CheckpointAck {
            term,
            job_id: self.job.clone(),
            attempt: self.attempt,
            checkpoint,
            task: task as u32,
            finished,
            subtasks_json: json,
        };
        if finished {
            self.finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ack.clone());
        }
        let _ = self.acks.send(ack);
    }
}

/// An attempt running on this worker.
pub struct Running {
    pub cancel: CancelHandle,
    /// How its part ended here, once it did (kept for a leader that asks).
    pub end: Mutex<Option<AttemptEndedRequest>>,
    pub link: Arc<Link>,
    pub live: Arc<LiveStats>,
    pub graph: Arc<JobGraph>,
    pub factory: Arc<Factory>,
    /// Global task indices running here.
    pub local: HashSet<usize>,
    /// Global index of subtask 0 of the task each node belongs to.
    pub task_of_node: Vec<usize>,
}

impl Running {
    /// Whether subtask `subtask` of `node` runs here.
    pub fn hosts(&self, node: NodeId, subtask: u32) -> bool {
        self.local
            .contains(&(self.task_of_node[node] + subtask as usize))
    }

    /// Publishes what a completed checkpoint covers for the subtasks that run here.
    /// `store` holds the checkpoint (and any operator state its metadata refers to).
    pub fn commit(
        &self,
        metadata: &CheckpointMetadata,
        store: &CheckpointStore,
    ) -> Result<(), WorkerError> {
        commit_checkpoint_where(
            self.factory.as_ref(),
            &self.graph,
            metadata,
            store,
            &|n, s| {
                // A restored state of another parallelism is committed by the subtask it maps to.
                let p = self.graph.nodes[n].parallelism.max(1);
                self.hosts(n, s % p)
            },
        )
        .map_err(WorkerError::Checkpoint)
    }
}

/// Where this worker keeps attempts' local files.
pub struct Paths {
    pub data_dir: PathBuf,
    /// See [`crate::WorkerConfig::allowed_paths`].
    pub allowed: Option<eddy_security::paths::AllowedPaths>,
}

/// The local working directory of an attempt (its RocksDB state), removed when it ends.
pub fn attempt_dir(data_dir: &Path, job: &str, attempt: u64) -> PathBuf {
    data_dir.join(format!("{job}-{attempt}"))
}

/// Removes the attempt directories a previous run of this worker left behind (it was killed):
/// no attempt survives its worker, and their state is in their checkpoints.
pub fn remove_attempt_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            tracing::info!(dir = %path.display(), "removing the state of an attempt of a previous run");
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove");
            }
        }
    }
}

/// Global task index of subtask 0 of the task each node is part of.
pub fn task_of_node(graph: &JobGraph) -> Vec<usize> {
    let mut of = vec![0; graph.nodes.len()];
    for task in task_layout(graph) {
        for m in task.members {
            of[m] = task.first_index;
        }
    }
    of
}

/// Everything a deployment needs, prepared before its tasks start.
pub struct Prepared {
    pub running: Arc<Running>,
    pub options: ExecOptions,
}

/// Compiles the job, opens the restore point, builds the factory and the placement.
pub fn prepare(
    request: &DeployRequest,
    paths: &Paths,
    inlets: Arc<Inlets>,
    acks: mpsc::UnboundedSender<CheckpointAck>,
    runtime: tokio::runtime::Handle,
    host: Arc<dyn TaskHost>,
) -> Result<Prepared, WorkerError> {
    let submission: Submission = serde_json::from_slice(&request.job_json)
        .map_err(|e| WorkerError::Job(format!("bad job description: {e}")))?;
    let graph = submission
        .compile()
        .map_err(|e| WorkerError::Job(e.to_string()))?;
    let checkpointing = submission.checkpoint_interval_ms > 0;
    // The job id names files in the data directory.
    eddy_security::paths::check_component("the job id", &request.job_id)
        .map_err(|e| WorkerError::Job(e.to_string()))?;
    if let Some(allowed) = &paths.allowed {
        let mut used = graph.file_paths();
        for (what, path) in [
            (
                "the checkpoint directory",
                submission.checkpoint_dir.as_str(),
            ),
            ("the checkpoint to restore", request.restore_dir.as_str()),
            (
                "--topics-from",
                submission.topics_from.as_deref().unwrap_or(""),
            ),
        ] {
            if !path.is_empty() {
                used.push((what.to_string(), path.to_string()));
            }
        }
        for (what, path) in used {
            allowed
                .check(&what, &path)
                .map_err(|e| WorkerError::Job(format!("{e} (on worker, see its --allow-path)")))?;
        }
    }
    let attempt_dir = attempt_dir(&paths.data_dir, &request.job_id, request.attempt);
    let mut settings = RunSettings {
        dead_letter_path: paths
            .data_dir
            .join(format!("{}-dead-letter.jsonl", request.job_id)),
        exactly_once: checkpointing,
        ..Default::default()
    };
    if checkpointing {
        settings.state = StateBackendChoice::RocksDb {
            dir: attempt_dir.join("state"),
            options: RocksOptions::new(64 << 20, 100_000)
                .map_err(|e| WorkerError::State(e.to_string()))?,
        };
    }
    if request.restore_checkpoint > 0 {
        let store = CheckpointStore::open_dir(Path::new(&request.restore_dir))?;
        let metadata =
            store
                .load(request.restore_checkpoint)
                .map_err(|source| WorkerError::Restore {
                    checkpoint: request.restore_checkpoint,
                    source,
                })?;
        settings.restore = Some(Restored {
            store,
            metadata: Arc::new(metadata),
            incremental_base: request.restore_dir == submission.checkpoint_dir,
        });
    }
    let restore = settings.restore.clone();
    let factory = Arc::new(Factory::new(settings));
    let local: HashSet<usize> = request.tasks.iter().map(|t| *t as usize).collect();
    let of_node = task_of_node(&graph);
    let link = Arc::new(Link {
        job: request.job_id.clone(),
        attempt: request.attempt,
        triggers: Mutex::new(Triggers::Waiting(None)),
        targets: Mutex::default(),
        term: Default::default(),
        acks,
        finished: Mutex::default(),
    });
    let live = Arc::new(LiveStats::default());
    let network = Arc::new(GrpcNetwork {
        job: request.job_id.clone(),
        attempt: request.attempt,
        task_addrs: request.task_addrs.clone(),
        task_of_node: of_node.clone(),
        inlets,
        runtime,
    });
    let running = Arc::new(Running {
        cancel: CancelHandle::default(),
        end: Mutex::default(),
        link: Arc::clone(&link),
        live: Arc::clone(&live),
        graph: Arc::new(graph),
        factory,
        local: local.clone(),
        task_of_node: of_node,
    });
    if let Some(r) = &restore {
        // The previous attempt may have died between completing this checkpoint and
        // committing it; commits are idempotent.
        running.commit(&r.metadata, &r.store)?;
    }
    let options = ExecOptions {
        placement: Some(Placement {
            local,
            network,
            checkpoints: checkpointing.then_some(link as Arc<dyn CheckpointLink>),
        }),
        live: Some(live),
        max_source_rate: submission.max_source_rate,
        host: Some(host),
        ..ExecOptions::default()
    };
    Ok(Prepared { running, options })
}

/// Runs the attempt's local tasks to their end (blocking).
pub fn run(prepared: &Prepared) -> Result<(), ExecError> {
    let running = &prepared.running;
    execute(
        &running.graph,
        running.factory.as_ref(),
        &prepared.options,
        &running.cancel,
    )
    .map(|_| ())
}

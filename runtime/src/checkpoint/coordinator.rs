//! The checkpoint coordinator: a state machine driven by messages.
//!
//! Inputs are timer ticks, savepoint requests and task reports (acknowledgements of a
//! checkpoint, and the final state of a task that reached the end of its input); outputs are
//! triggers for the sources and completed checkpoints. It holds no channels and no threads, so
//! the local executor drives it from a thread today and the Raft leader can drive it later.
//!
//! One checkpoint is in flight at a time: the next is triggered only after the previous one
//! completed and its sinks committed, which keeps commits in checkpoint order and lets pruning
//! run while nothing is being uploaded.

use super::{CheckpointError, CheckpointId, CheckpointMetadata, CheckpointStore, UploadTarget};
use super::{OperatorState, SubtaskState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the coordinator knows of a node of the job.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's name: operators are matched by it on restore.
    pub name: String,
    /// The node's kind (`window_aggregate`, ...): a restore refuses a different one.
    pub kind: String,
    /// Subtasks of the node in this run.
    pub parallelism: u32,
}

/// The state of one operator subtask as a task reports it (uploads done).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReportedSubtask {
    /// Index of the node in the job graph.
    pub node: usize,
    pub state: SubtaskState,
}

/// A message to the coordinator.
#[derive(Debug)]
pub enum CoordinatorInput {
    /// The checkpoint interval elapsed.
    Tick,
    /// Take a savepoint into this store now (or right after the checkpoint in flight).
    Savepoint(CheckpointStore),
    /// A task took its snapshot for `checkpoint` and uploaded it.
    Ack {
        checkpoint: CheckpointId,
        task: usize,
        subtasks: Vec<ReportedSubtask>,
    },
    /// A task reached the end of its input; this is its final state, which stands in for it in
    /// every later checkpoint.
    Finished {
        task: usize,
        subtasks: Vec<ReportedSubtask>,
    },
}

/// What the coordinator asks its driver to do.
#[derive(Debug)]
pub enum CoordinatorOutput {
    /// Inject barriers for this checkpoint at these source tasks.
    Trigger {
        target: UploadTarget,
        sources: Vec<usize>,
    },
    /// A checkpoint (or savepoint) is complete and published: commit what it covers.
    Completed {
        metadata: Arc<CheckpointMetadata>,
        savepoint: bool,
        duration: Duration,
    },
    /// The checkpoint in flight did not complete within the timeout and was abandoned; the
    /// next one subsumes it (its barriers left in channels are dropped by the tasks, and sinks
    /// keep what it staged for the next checkpoint that completes).
    Abandoned {
        checkpoint: CheckpointId,
        savepoint: bool,
        reason: String,
    },
}

/// Settings of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The job's name, written into every checkpoint so that another job's is refused.
    pub job: String,
    /// Key groups of the job, written into every checkpoint for the same reason.
    pub max_parallelism: u32,
    /// Completed checkpoints to keep.
    pub retain: usize,
    /// The id of the first checkpoint (one past the restored one).
    pub first_id: CheckpointId,
    /// When a checkpoint is given up, and how many in a row may be.
    pub limits: CheckpointLimits,
    /// Prune old checkpoints as soon as a new one is published. A cluster leader prunes only
    /// after Raft recorded the new checkpoint: until then a new leader would restore the
    /// previous one, which must still exist.
    pub prune_on_complete: bool,
}

/// How long a checkpoint may take and how many may fail in a row before the job's attempt is
/// failed (Flink's `execution.checkpointing.timeout` and `tolerable-failed-checkpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLimits {
    /// A checkpoint still in flight after this long is abandoned and the next one triggered.
    pub timeout: Duration,
    /// Checkpoints abandoned in a row that are tolerated; one more fails the attempt, which
    /// restarts from the last completed checkpoint.
    pub tolerable_failures: u32,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        CheckpointLimits {
            timeout: Duration::from_secs(30),
            tolerable_failures: 3,
        }
    }
}

struct InFlight {
    target: UploadTarget,
    savepoint: bool,
    started: Instant,
    acks: Vec<Option<Vec<ReportedSubtask>>>,
}

/// Decides when checkpoints start and complete.
pub struct CheckpointCoordinator {
    config: CoordinatorConfig,
    store: CheckpointStore,
    nodes: Vec<NodeInfo>,
    /// Per task: whether it is a source task (where barriers are injected).
    sources: Vec<bool>,
    finished: Vec<Option<Vec<ReportedSubtask>>>,
    next_id: CheckpointId,
    in_flight: Option<InFlight>,
    savepoint_requested: Option<CheckpointStore>,
    job_done: bool,
    /// Checkpoints abandoned since the last one that completed.
    failures_in_a_row: u32,
}

impl CheckpointCoordinator {
    /// A coordinator for a job whose tasks are described by `sources` (true for source tasks).
    pub fn new(
        config: CoordinatorConfig,
        store: CheckpointStore,
        nodes: Vec<NodeInfo>,
        sources: Vec<bool>,
    ) -> CheckpointCoordinator {
        let tasks = sources.len();
        CheckpointCoordinator {
            next_id: config.first_id.max(1),
            config,
            store,
            nodes,
            sources,
            finished: vec![None; tasks],
            in_flight: None,
            savepoint_requested: None,
            job_done: false,
            failures_in_a_row: 0,
        }
    }

    /// True once the final checkpoint after the end of all input is published.
    pub fn job_done(&self) -> bool {
        self.job_done
    }

    /// Handles one message.
    pub fn handle(
        &mut self,
        input: CoordinatorInput,
    ) -> Result<Vec<CoordinatorOutput>, CheckpointError> {
        let mut out = Vec::new();
        self.check_report(&input)?;
        match input {
            CoordinatorInput::Tick => {
                self.check_timeout(&mut out)?;
                self.maybe_trigger(&mut out);
            }
            CoordinatorInput::Savepoint(store) => {
                self.savepoint_requested = Some(store);
                self.maybe_trigger(&mut out);
            }
            CoordinatorInput::Ack {
                checkpoint,
                task,
                subtasks,
            } => {
                if let Some(flight) = self.in_flight.as_mut() {
                    if flight.target.checkpoint == checkpoint && task < flight.acks.len() {
                        flight.acks[task] = Some(subtasks);
                    }
                }
                self.maybe_complete(&mut out)?;
            }
            CoordinatorInput::Finished { task, subtasks } => {
                if let Some(flight) = self.in_flight.as_mut() {
                    // The task ended before the barrier reached it: all it ever saw is in its
                    // final state, which is therefore its state at this checkpoint too.
                    if flight.acks.get(task).is_some_and(Option::is_none) {
                        flight.acks[task] = Some(subtasks.clone());
                    }
                }
                self.finished[task] = Some(subtasks);
                self.maybe_complete(&mut out)?;
            }
        }
        Ok(out)
    }

    /// A report names a task and nodes of this job: anything else (a message of another plan,
    /// or a hostile peer) is refused before it is used as an index.
    fn check_report(&self, input: &CoordinatorInput) -> Result<(), CheckpointError> {
        let (task, subtasks) = match input {
            CoordinatorInput::Ack { task, subtasks, .. }
            | CoordinatorInput::Finished { task, subtasks } => (*task, subtasks),
            CoordinatorInput::Tick | CoordinatorInput::Savepoint(_) => return Ok(()),
        };
        if task >= self.sources.len() {
            return Err(CheckpointError::Failed(format!(
                "a report names task {task}, but the job has {} task subtasks",
                self.sources.len()
            )));
        }
        if let Some(bad) = subtasks.iter().find(|s| s.node >= self.nodes.len()) {
            return Err(CheckpointError::Failed(format!(
                "a report of task {task} names node {}, but the job has {} nodes",
                bad.node,
                self.nodes.len()
            )));
        }
        Ok(())
    }

    /// The checkpoint in flight, when it began.
    pub fn in_flight(&self) -> Option<(CheckpointId, Instant)> {
        self.in_flight
            .as_ref()
            .map(|f| (f.target.checkpoint, f.started))
    }

    /// Abandons the checkpoint in flight if it ran out of time; fails when too many were
    /// abandoned in a row.
    fn check_timeout(&mut self, out: &mut Vec<CoordinatorOutput>) -> Result<(), CheckpointError> {
        let timeout = self.config.limits.timeout;
        if self
            .in_flight
            .as_ref()
            .is_none_or(|f| f.started.elapsed() < timeout)
        {
            return Ok(());
        }
        let flight = self.in_flight.take().expect("checked above");
        let missing: Vec<usize> = (0..flight.acks.len())
            .filter(|&t| flight.acks[t].is_none())
            .collect();
        self.failures_in_a_row += 1;
        let reason = format!(
            "checkpoint {} did not complete within {} ms ({} of {} task subtasks did not acknowledge, e.g. {:?})",
            flight.target.checkpoint,
            timeout.as_millis(),
            missing.len(),
            flight.acks.len(),
            &missing[..missing.len().min(4)],
        );
        out.push(CoordinatorOutput::Abandoned {
            checkpoint: flight.target.checkpoint,
            savepoint: flight.savepoint,
            reason: reason.clone(),
        });
        if self.failures_in_a_row > self.config.limits.tolerable_failures {
            return Err(CheckpointError::Failed(format!(
                "{} checkpoints in a row failed, more than the {} tolerated; the last: {reason}",
                self.failures_in_a_row, self.config.limits.tolerable_failures
            )));
        }
        Ok(())
    }

    fn maybe_trigger(&mut self, out: &mut Vec<CoordinatorOutput>) {
        if self.in_flight.is_some() || self.job_done {
            return;
        }
        let running: Vec<usize> = (0..self.sources.len())
            .filter(|&t| self.sources[t] && self.finished[t].is_none())
            .collect();
        if running.is_empty() {
            return; // the final checkpoint follows when every task has finished
        }
        let (store, savepoint) = match self.savepoint_requested.take() {
            Some(store) => (store, true),
            None => (self.store.clone(), false),
        };
        let target = UploadTarget {
            store,
            checkpoint: self.next_id,
            incremental: !savepoint,
        };
        self.next_id += 1;
        self.in_flight = Some(InFlight {
            target: target.clone(),
            savepoint,
            started: Instant::now(),
            acks: self.finished.clone(),
        });
        out.push(CoordinatorOutput::Trigger {
            target,
            sources: running,
        });
    }

    fn maybe_complete(&mut self, out: &mut Vec<CoordinatorOutput>) -> Result<(), CheckpointError> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.acks.iter().all(Option::is_some))
        {
            let flight = self.in_flight.take().expect("checked above");
            let acks: Vec<ReportedSubtask> = flight.acks.into_iter().flatten().flatten().collect();
            let metadata = self.metadata(flight.target.checkpoint, false, acks);
            flight.target.store.publish(&metadata)?;
            self.failures_in_a_row = 0;
            if !flight.savepoint && self.config.prune_on_complete {
                self.store.prune(self.config.retain)?;
            }
            out.push(CoordinatorOutput::Completed {
                metadata: Arc::new(metadata),
                savepoint: flight.savepoint,
                duration: flight.started.elapsed(),
            });
            if self.savepoint_requested.is_some() {
                // A stop is waiting for this one to finish: take its savepoint now.
                self.maybe_trigger(out);
            }
        }
        if self.in_flight.is_none() && !self.job_done && self.finished.iter().all(Option::is_some) {
            // Every task has ended: the final checkpoint holds what the sinks staged last.
            let id = self.next_id;
            self.next_id += 1;
            let states = self.finished.iter().flatten().flatten().cloned().collect();
            let metadata = self.metadata(id, true, states);
            self.store.publish(&metadata)?;
            if self.config.prune_on_complete {
                self.store.prune(self.config.retain)?;
            }
            self.job_done = true;
            out.push(CoordinatorOutput::Completed {
                metadata: Arc::new(metadata),
                savepoint: false,
                duration: Duration::ZERO,
            });
        }
        Ok(())
    }

    fn metadata(
        &self,
        checkpoint: CheckpointId,
        finished: bool,
        reports: Vec<ReportedSubtask>,
    ) -> CheckpointMetadata {
        let mut operators: Vec<OperatorState> = self
            .nodes
            .iter()
            .map(|n| OperatorState {
                name: n.name.clone(),
                kind: n.kind.clone(),
                parallelism: n.parallelism,
                subtasks: Vec::new(),
            })
            .collect();
        for report in reports {
            operators[report.node].subtasks.push(report.state);
        }
        for op in &mut operators {
            op.subtasks.sort_by_key(|s| s.subtask);
        }
        CheckpointMetadata {
            format: super::store::METADATA_FORMAT,
            job: self.config.job.clone(),
            checkpoint,
            finished,
            completed_at_ms: crate::types::wall_clock_ms(),
            max_parallelism: self.config.max_parallelism,
            operators,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::DirStorage;
    use crate::keygroup::KeyGroupRange;

    fn state(subtask: u32) -> SubtaskState {
        SubtaskState {
            subtask,
            key_groups: KeyGroupRange { start: 0, end: 128 },
            finished: false,
            state: serde_json::json!({ "at": subtask }),
            keyed: None,
            watermark: None,
        }
    }

    fn report(node: usize) -> Vec<ReportedSubtask> {
        vec![ReportedSubtask {
            node,
            state: state(0),
        }]
    }

    /// A source task (0) feeding a sink task (1).
    fn coordinator(dir: &std::path::Path) -> (CheckpointCoordinator, CheckpointStore) {
        let store = CheckpointStore::new(Arc::new(DirStorage::new(dir).unwrap()));
        let nodes = ["source", "sink"]
            .iter()
            .map(|n| NodeInfo {
                name: n.to_string(),
                kind: n.to_string(),
                parallelism: 1,
            })
            .collect();
        let config = CoordinatorConfig {
            job: "job".into(),
            max_parallelism: 128,
            retain: 2,
            first_id: 7,
            limits: CheckpointLimits {
                timeout: Duration::from_millis(200),
                tolerable_failures: 1,
            },
            prune_on_complete: true,
        };
        (
            CheckpointCoordinator::new(config, store.clone(), nodes, vec![true, false]),
            store,
        )
    }

    #[test]
    fn a_checkpoint_completes_when_every_task_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, store) = coordinator(dir.path());
        let out = c.handle(CoordinatorInput::Tick).unwrap();
        let [CoordinatorOutput::Trigger { target, sources }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((target.checkpoint, sources.as_slice()), (7, &[0][..]));
        assert!(
            c.handle(CoordinatorInput::Tick).unwrap().is_empty(),
            "one checkpoint in flight at a time"
        );
        let ack = |task, node| CoordinatorInput::Ack {
            checkpoint: 7,
            task,
            subtasks: report(node),
        };
        assert!(c.handle(ack(0, 0)).unwrap().is_empty());
        assert!(store.completed().unwrap().is_empty(), "not before the sink");
        let out = c.handle(ack(1, 1)).unwrap();
        assert!(matches!(
            out.as_slice(),
            [CoordinatorOutput::Completed {
                savepoint: false,
                ..
            }]
        ));
        assert_eq!(store.completed().unwrap(), vec![7]);
        let meta = store.load(7).unwrap();
        assert_eq!(meta.operator("sink").unwrap().subtasks.len(), 1);
    }

    #[test]
    fn a_task_that_ended_before_the_barrier_counts_with_its_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, store) = coordinator(dir.path());
        c.handle(CoordinatorInput::Tick).unwrap();
        // The source ends before it saw the trigger, then the sink ends too.
        c.handle(CoordinatorInput::Finished {
            task: 0,
            subtasks: report(0),
        })
        .unwrap();
        let out = c
            .handle(CoordinatorInput::Finished {
                task: 1,
                subtasks: report(1),
            })
            .unwrap();
        // Checkpoint 7 completes with the final states, then the final checkpoint 8.
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(store.completed().unwrap(), vec![7, 8]);
        assert!(store.load(8).unwrap().finished);
        assert!(c.job_done());
        assert!(c.handle(CoordinatorInput::Tick).unwrap().is_empty());
    }

    #[test]
    fn a_checkpoint_that_times_out_is_abandoned_and_too_many_fail_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, store) = coordinator(dir.path());
        c.handle(CoordinatorInput::Tick).unwrap();
        assert_eq!(c.in_flight().map(|f| f.0), Some(7));
        std::thread::sleep(Duration::from_millis(250));
        // The source's trigger was lost: 7 is abandoned and 8 triggered at once.
        let out = c.handle(CoordinatorInput::Tick).unwrap();
        assert!(
            matches!(
                out.as_slice(),
                [CoordinatorOutput::Abandoned { checkpoint: 7, reason, .. }, CoordinatorOutput::Trigger { target, .. }]
                    if target.checkpoint == 8 && reason.contains("2 of 2")
            ),
            "{out:?}"
        );
        // A late acknowledgement of 7 changes nothing; 8 completes and resets the count.
        let ack = |checkpoint, task| CoordinatorInput::Ack {
            checkpoint,
            task,
            subtasks: report(task),
        };
        assert!(c.handle(ack(7, 0)).unwrap().is_empty());
        c.handle(ack(8, 0)).unwrap();
        c.handle(ack(8, 1)).unwrap();
        assert_eq!(store.completed().unwrap(), vec![8]);
        // Two abandoned in a row (one tolerated) fail the attempt.
        c.handle(CoordinatorInput::Tick).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.handle(CoordinatorInput::Tick).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        let failed = c.handle(CoordinatorInput::Tick);
        assert!(
            matches!(&failed, Err(CheckpointError::Failed(m)) if m.contains("2 checkpoints in a row")),
            "{failed:?}"
        );
    }

    #[test]
    fn reports_naming_unknown_tasks_or_nodes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = coordinator(dir.path());
        c.handle(CoordinatorInput::Tick).unwrap();
        let finished = c.handle(CoordinatorInput::Finished {
            task: 9,
            subtasks: report(0),
        });
        assert!(matches!(finished, Err(CheckpointError::Failed(m)) if m.contains("task 9")));
        let ack = c.handle(CoordinatorInput::Ack {
            checkpoint: 7,
            task: 0,
            subtasks: report(5),
        });
        assert!(matches!(ack, Err(CheckpointError::Failed(m)) if m.contains("node 5")));
    }

    #[test]
    fn a_savepoint_waits_for_the_checkpoint_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = coordinator(&dir.path().join("ckpt"));
        let sp = CheckpointStore::new(Arc::new(DirStorage::new(dir.path().join("sp")).unwrap()));
        c.handle(CoordinatorInput::Tick).unwrap();
        assert!(c
            .handle(CoordinatorInput::Savepoint(sp.clone()))
            .unwrap()
            .is_empty());
        for task in 0..2 {
            let out = c
                .handle(CoordinatorInput::Ack {
                    checkpoint: 7,
                    task,
                    subtasks: report(task),
                })
                .unwrap();
            if task == 1 {
                // Completion of 7, then the savepoint's trigger right away.
                assert!(
                    matches!(
                        out.as_slice(),
                        [CoordinatorOutput::Completed { .. }, CoordinatorOutput::Trigger { target, .. }]
                            if target.checkpoint == 8 && !target.incremental
                    ),
                    "{out:?}"
                );
            }
        }
    }
}

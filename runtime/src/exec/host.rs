//! Who runs a job's tasks. [`execute`](super::execute) builds every task subtask and hands each to
//! a host: a thread of its own by default (`eddy run`), an actix actor in a cluster worker. A task
//! runs in bounded steps, so a host that interleaves other work between them (an actor reading
//! its mailbox) gets control back often; the outcome of every task reaches `execute` through a
//! channel whatever the host does, and a task its host drops unfinished reports a failure, so a
//! job never waits for a task that is gone.

use super::{ExecError, Task};
use crate::graph::NodeId;
use crossbeam_channel::Sender;

/// Rounds of a task per step: a round polls the source or handles one input element (a batch),
/// so a step is short (well under a millisecond of work when data flows, at most a blocked
/// channel's timeout when it does not).
const STEP_ROUNDS: u32 = 32;

/// What a task reports when it ends: records in and out per node, or why it failed.
pub(super) type Outcome = Result<Vec<(NodeId, u64, u64)>, ExecError>;

/// Whether a task wants another step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Call [`TaskRun::step`] again.
    More,
    /// The task ended (finished, failed or cancelled) and reported it.
    Done,
}

/// One task subtask of a running job, ready for a host to drive.
pub struct TaskRun {
    task: Task,
    /// `None` once the outcome was sent.
    outcome: Option<Sender<Outcome>>,
}

impl TaskRun {
    pub(super) fn new(task: Task, outcome: Sender<Outcome>) -> Self {
        TaskRun {
            task,
            outcome: Some(outcome),
        }
    }

    /// The task's name (its chained operators and subtask), for threads and logs.
    pub fn name(&self) -> &str {
        &self.task.name
    }

    /// Runs the task a little; a panic inside counts as the task failing.
    pub fn step(&mut self) -> Progress {
        if self.outcome.is_none() {
            return Progress::Done;
        }
        let task = &mut self.task;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.step(STEP_ROUNDS)));
        let outcome = match result {
            Ok(Ok(false)) => return Progress::More,
            Ok(Ok(true)) => Ok(self.task.counts()),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(ExecError::Panic {
                task: self.task.name.clone(),
                message: panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            }),
        };
        if let Some(sender) = self.outcome.take() {
            let _ = sender.send(outcome);
        }
        Progress::Done
    }

    /// Steps until the task ends (the thread host).
    pub fn run_to_end(mut self) {
        while self.step() == Progress::More {}
    }
}

impl Drop for TaskRun {
    fn drop(&mut self) {
        if let Some(sender) = self.outcome.take() {
            let _ = sender.send(Err(ExecError::Panic {
                task: self.task.name.clone(),
                message: "its host dropped it before it ended".into(),
            }));
        }
    }
}

/// Runs tasks somewhere: each launched [`TaskRun`] must be stepped until it is done, or dropped.
pub trait TaskHost: Send + Sync + std::fmt::Debug {
    /// Starts running `task`; an error means it could not be started (it is dropped, and the
    /// job fails with this message).
    fn launch(&self, task: TaskRun) -> Result<(), String>;
}

//! The replicated state of the cluster: what every coordinator agrees on through Raft. It holds
//! only decisions (jobs, their attempts and placements, workers, completed checkpoints), never
//! soft state such as heartbeats or metrics, so the log grows with decisions, not with time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker id, assigned by the state machine on registration.
pub type WorkerId = u64;

/// What a user submitted (the job file's text and run settings).
pub use eddy_jobs::Submission as JobSpec;

/// Where a job is in its life. Transitions are checked by [`JobState::may_become`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted; the leader has not placed it yet.
    Scheduling,
    /// An attempt is deployed on workers.
    Running,
    /// Not enough free slots; it starts when workers join.
    WaitingForSlots,
    /// Every task reached the end of its input and the final checkpoint (if any) completed.
    Finished,
    Cancelled,
    Failed,
}

impl JobState {
    /// Whether the job is over: nothing will run it again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Cancelled | JobState::Failed
        )
    }

    /// The allowed transitions: a terminal job never changes again, and only a running attempt
    /// can finish.
    pub fn may_become(self, next: JobState) -> bool {
        match (self, next) {
            (from, _) if from.is_terminal() => false,
            (from, JobState::Finished) => from == JobState::Running,
            _ => true,
        }
    }

    /// The name `eddy list` and `eddy status` print.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Scheduling => "scheduling",
            JobState::Running => "running",
            JobState::WaitingForSlots => "waiting-for-slots",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }
}

/// A checkpoint the leader saw complete (its metadata published in the checkpoint directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub id: u64,
    pub completed_at_ms: u64,
    /// The final checkpoint after the end of all input.
    pub finished: bool,
    /// The directory it was written to (the job's checkpoint directory or a savepoint's).
    pub location: String,
    pub savepoint: bool,
}

/// A job and its current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// The job's name (from its file).
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why it is in that state (failure, waiting for slots, restart reason).
    pub message: String,
    /// Each (re)deployment is a new attempt; messages of older attempts are ignored.
    pub attempt: u64,
    /// Slot i of the attempt (subtask i of every task) runs on `slots[i]`.
    pub slots: Vec<WorkerId>,
    pub parallelism: u32,
    pub last_checkpoint: Option<CheckpointRecord>,
    /// The highest checkpoint id ever triggered, so a new attempt never reuses an id.
    pub max_checkpoint_id: u64,
    pub restarts: u64,
    pub submitted_at_ms: u64,
    /// Directories the job's file sinks publish into: no two live jobs may share one.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// A worker process that registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub addr: String,
    pub slots: u32,
}

/// A client API token: its hash (never the token), role and whether it was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub role: eddy_security::token::TokenRole,
    /// SHA-256 of the secret (`eddy_security::token::hash`).
    pub hash: String,
    pub created_at_ms: u64,
    pub revoked: bool,
    /// When it stops working (ms since the epoch); `None`: never.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// One change a client made (or tried): the audit log, replicated like everything else, so it
/// survives a leader change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// The token's name (`anonymous` on a cluster run with `--insecure`).
    pub who: String,
    /// submit, cancel, savepoint, create-token, revoke-token.
    pub action: String,
    /// The job file, job id or token name.
    pub target: String,
    /// `ok`, or the error's code and message.
    pub result: String,
}

/// Audit records kept (the oldest go first): the state stays bounded.
pub const AUDIT_KEPT: usize = 10_000;

/// A change to the cluster state: the payload of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterWorker {
        addr: String,
        slots: u32,
    },
    /// A worker stopped heartbeating (or left).
    RemoveWorker {
        id: WorkerId,
    },
    SubmitJob {
        name: String,
        /// Boxed: the largest command by far (serialized exactly as unboxed).
        spec: Box<JobSpec>,
        parallelism: u32,
        at_ms: u64,
        /// The savepoint the job starts from, checked against the job when it was submitted.
        #[serde(default)]
        from_savepoint: Option<CheckpointRecord>,
        /// The output directories of its file sinks.
        #[serde(default)]
        outputs: Vec<String>,
    },
    /// A new attempt is deployed on these slots.
    StartAttempt {
        job: String,
        attempt: u64,
        slots: Vec<WorkerId>,
    },
    SetJobState {
        job: String,
        state: JobState,
        message: String,
    },
    /// The leader is about to trigger checkpoints up to this id.
    ReserveCheckpointIds {
        job: String,
        up_to: u64,
    },
    CheckpointCompleted {
        job: String,
        attempt: u64,
        checkpoint: CheckpointRecord,
    },
    /// A new token; `only_first`: refused once any token exists (the bootstrap).
    CreateToken {
        token: TokenRecord,
        only_first: bool,
    },
    RevokeToken {
        name: String,
    },
    Audit(AuditRecord),
}

/// What applying a [`Command`] produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    WorkerRegistered(WorkerId),
    JobSubmitted(String),
    /// The command did not fit the state (e.g. a terminal job); nothing changed.
    Rejected(String),
}

/// The replicated state machine's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub next_job: u64,
    pub next_worker: WorkerId,
    pub jobs: BTreeMap<String, JobRecord>,
    pub workers: BTreeMap<WorkerId, WorkerRecord>,
    /// Client API tokens by name (revoked ones stay, so a name is never reused).
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// The newest [`AUDIT_KEPT`] audit records, oldest first.
    #[serde(default)]
    pub audit: std::collections::VecDeque<AuditRecord>,
}

impl ClusterState {
    /// Applies one committed command. Deterministic: every node computes the same result.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::RegisterWorker { addr, slots } => {
                // A worker restarting on the same address replaces its old registration.
                self.workers.retain(|_, w| &w.addr != addr);
                self.next_worker += 1;
                let id = self.next_worker;
                self.workers.insert(
                    id,
                    WorkerRecord {
                        id,
                        addr: addr.clone(),
                        slots: *slots,
                    },
                );
                CommandResult::WorkerRegistered(id)
            }
            Command::RemoveWorker { id } => {
                self.workers.remove(id);
                CommandResult::Done
            }
            Command::CreateToken { token, only_first } => {
                if *only_first && !self.tokens.is_empty() {
                    return CommandResult::Rejected(
                        "the cluster already has tokens: create more with an admin token (eddy token create)"
                            .into(),
                    );
                }
                if self.tokens.contains_key(&token.name) {
                    return CommandResult::Rejected(format!(
                        "a token named `{}` exists (names are never reused; pick another)",
                        token.name
                    ));
                }
                self.tokens.insert(token.name.clone(), token.clone());
                CommandResult::Done
            }
            Command::Audit(record) => {
                if self.audit.len() >= AUDIT_KEPT {
                    self.audit.pop_front();
                }
                self.audit.push_back(record.clone());
                CommandResult::Done
            }
            Command::RevokeToken { name } => match self.tokens.get_mut(name) {
                Some(t) => {
                    t.revoked = true;
                    CommandResult::Done
                }
                None => CommandResult::Rejected(format!("no token named `{name}`")),
            },
            Command::SubmitJob {
                name,
                spec,
                parallelism,
                at_ms,
                from_savepoint,
                outputs,
            } => {
                // Two live jobs on one checkpoint directory would overwrite each other's
                // checkpoints; on one output directory, each other's files.
                for other in self.jobs.values().filter(|j| !j.state.is_terminal()) {
                    if !spec.checkpoint_dir.is_empty()
                        && other.spec.checkpoint_dir == spec.checkpoint_dir
                    {
                        return CommandResult::Rejected(format!(
                            "checkpoint directory `{}` is in use by {} ({}); give this job a directory of its own",
                            spec.checkpoint_dir,
                            other.id,
                            other.state.name()
                        ));
                    }
                    if let Some(dir) = outputs.iter().find(|o| other.outputs.contains(o)) {
                        return CommandResult::Rejected(format!(
                            "output directory `{dir}` is written by {} ({}); give this job a directory of its own",
                            other.id,
                            other.state.name()
                        ));
                    }
                }
                self.forget_old_jobs();
                self.next_job += 1;
                let id = format!("job-{}", self.next_job);
                self.jobs.insert(
                    id.clone(),
                    JobRecord {
                        id: id.clone(),
                        name: name.clone(),
                        spec: (**spec).clone(),
                        state: JobState::Scheduling,
                        message: String::new(),
                        attempt: 0,
                        slots: Vec::new(),
                        parallelism: *parallelism,
                        last_checkpoint: from_savepoint.clone(),
                        max_checkpoint_id: from_savepoint.as_ref().map_or(0, |c| c.id),
                        restarts: 0,
                        submitted_at_ms: *at_ms,
                        outputs: outputs.clone(),
                    },
                );
                CommandResult::JobSubmitted(id)
            }
            Command::StartAttempt {
                job,
                attempt,
                slots,
            } => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return CommandResult::Rejected(format!("no job {job}"));
                };
                if j.state.is_terminal() || *attempt <= j.attempt {
                    return CommandResult::Rejected(format!(
                        "{job} is {} at attempt {}",
                        j.state.name(),
                        j.attempt
                    ));
                }
                // The slots must be free (the job's own count as free: it moves).
                let mut free = self.free_slots_except(job);
                for w in slots {
                    match free.get_mut(w) {
                        Some(n) if *n > 0 => *n -= 1,
                        _ => {
                            return CommandResult::Rejected(format!(
                                "worker {w} has no free slot for {job}"
                            ))
                        }
                    }
                }
                let j = self.jobs.get_mut(job).expect("looked up above");
                if j.attempt > 0 {
                    j.restarts += 1;
                }
                j.attempt = *attempt;
                j.slots = slots.clone();
                j.state = JobState::Running;
                j.message.clear();
                CommandResult::Done
            }
            Command::SetJobState {
                job,
                state,
                message,
            } => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return CommandResult::Rejected(format!("no job {job}"));
                };
                if !j.state.may_become(*state) {
                    return CommandResult::Rejected(format!(
                        "{job} is {}, it cannot become {}",
                        j.state.name(),
                        state.name()
                    ));
                }
                j.state = *state;
                j.message = message.clone();
                if state.is_terminal() || *state == JobState::WaitingForSlots {
                    j.slots.clear();
                }
                CommandResult::Done
            }
            Command::ReserveCheckpointIds { job, up_to } => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return CommandResult::Rejected(format!("no job {job}"));
                };
                j.max_checkpoint_id = j.max_checkpoint_id.max(*up_to);
                CommandResult::Done
            }
            Command::CheckpointCompleted {
                job,
                attempt,
                checkpoint,
            } => {
                let Some(j) = self.jobs.get_mut(job) else {
                    return CommandResult::Rejected(format!("no job {job}"));
                };
                if *attempt != j.attempt || j.state.is_terminal() && !checkpoint.finished {
                    return CommandResult::Rejected(format!(
                        "checkpoint {} of {job} belongs to attempt {attempt}, not {}",
                        checkpoint.id, j.attempt
                    ));
                }
                j.max_checkpoint_id = j.max_checkpoint_id.max(checkpoint.id);
                if j.last_checkpoint
                    .as_ref()
                    .is_none_or(|c| c.id < checkpoint.id)
                {
                    j.last_checkpoint = Some(checkpoint.clone());
                }
                CommandResult::Done
            }
        }
    }

    /// Terminal jobs kept for `eddy list` and `status`; older ones are forgotten, so the state
    /// (and every snapshot of it) does not grow with every job ever submitted.
    pub const TERMINAL_JOBS_KEPT: usize = 1000;

    fn forget_old_jobs(&mut self) {
        let mut terminal: Vec<(u64, String)> = self
            .jobs
            .values()
            .filter(|j| j.state.is_terminal())
            .map(|j| (j.submitted_at_ms, j.id.clone()))
            .collect();
        if terminal.len() < Self::TERMINAL_JOBS_KEPT {
            return;
        }
        terminal.sort();
        let excess = terminal.len() + 1 - Self::TERMINAL_JOBS_KEPT;
        for (_, id) in terminal.into_iter().take(excess) {
            self.jobs.remove(&id);
        }
    }

    /// Slots of live workers not used by running attempts.
    pub fn free_slots(&self) -> BTreeMap<WorkerId, u32> {
        self.free_slots_except("")
    }

    /// Slots of live workers not used by running attempts of jobs other than `except`.
    pub fn free_slots_except(&self, except: &str) -> BTreeMap<WorkerId, u32> {
        let mut free: BTreeMap<WorkerId, u32> =
            self.workers.values().map(|w| (w.id, w.slots)).collect();
        for job in self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running && j.id != except)
        {
            for w in &job.slots {
                if let Some(n) = free.get_mut(w) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(state: &mut ClusterState) -> String {
        match state.apply(&Command::SubmitJob {
            name: "q5".into(),
            spec: Box::default(),
            parallelism: 2,
            at_ms: 0,
            from_savepoint: None,
            outputs: Vec::new(),
        }) {
            CommandResult::JobSubmitted(id) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_terminal_job_never_changes_again() {
        let mut s = ClusterState::default();
        let job = submit(&mut s);
        let set = |state| Command::SetJobState {
            job: job.clone(),
            state,
            message: String::new(),
        };
        assert_eq!(s.apply(&set(JobState::Cancelled)), CommandResult::Done);
        assert!(matches!(
            s.apply(&set(JobState::Running)),
            CommandResult::Rejected(_)
        ));
        assert!(matches!(
            s.apply(&Command::StartAttempt {
                job: job.clone(),
                attempt: 1,
                slots: vec![1]
            }),
            CommandResult::Rejected(_)
        ));
    }

    #[test]
    fn attempts_only_go_forward_and_count_restarts() {
        let mut s = ClusterState::default();
        for addr in ["a", "b"] {
            s.apply(&Command::RegisterWorker {
                addr: addr.into(),
                slots: 1,
            });
        }
        let job = submit(&mut s);
        let start = |attempt| Command::StartAttempt {
            job: job.clone(),
            attempt,
            slots: vec![1, 2],
        };
        assert_eq!(s.apply(&start(1)), CommandResult::Done);
        assert!(matches!(s.apply(&start(1)), CommandResult::Rejected(_)));
        assert_eq!(s.apply(&start(2)), CommandResult::Done);
        assert_eq!(s.jobs[&job].restarts, 1);
    }

    #[test]
    fn an_attempt_needs_free_slots_and_live_jobs_need_their_own_directories() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterWorker {
            addr: "a".into(),
            slots: 1,
        });
        let first = submit(&mut s);
        let second = submit(&mut s);
        let start = |job: &String, attempt| Command::StartAttempt {
            job: job.clone(),
            attempt,
            slots: vec![1],
        };
        assert_eq!(s.apply(&start(&first, 1)), CommandResult::Done);
        assert!(
            matches!(s.apply(&start(&second, 1)), CommandResult::Rejected(m) if m.contains("no free slot"))
        );
        // A restart of the first job may take its own slot again.
        assert_eq!(s.apply(&start(&first, 2)), CommandResult::Done);
        let spec = JobSpec {
            checkpoint_dir: "/ckpt".into(),
            ..JobSpec::default()
        };
        let with = |outputs: Vec<String>| Command::SubmitJob {
            name: "q5".into(),
            spec: Box::new(spec.clone()),
            parallelism: 1,
            at_ms: 0,
            from_savepoint: None,
            outputs,
        };
        assert!(matches!(
            s.apply(&with(vec!["/out".into()])),
            CommandResult::JobSubmitted(_)
        ));
        assert!(
            matches!(s.apply(&with(Vec::new())), CommandResult::Rejected(m) if m.contains("checkpoint directory `/ckpt`"))
        );
        let other = Command::SubmitJob {
            name: "q5".into(),
            spec: Box::default(),
            parallelism: 1,
            at_ms: 0,
            from_savepoint: None,
            outputs: vec!["/out".into()],
        };
        assert!(
            matches!(s.apply(&other), CommandResult::Rejected(m) if m.contains("output directory `/out`"))
        );
    }

    #[test]
    fn free_slots_subtract_running_attempts() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterWorker {
            addr: "a".into(),
            slots: 4,
        });
        s.apply(&Command::RegisterWorker {
            addr: "b".into(),
            slots: 2,
        });
        let job = submit(&mut s);
        s.apply(&Command::StartAttempt {
            job,
            attempt: 1,
            slots: vec![1, 2],
        });
        assert_eq!(
            s.free_slots().into_iter().collect::<Vec<_>>(),
            [(1, 3), (2, 1)]
        );
    }
}

//! Placing: the job needs an attempt. It takes free slots (spread over the workers with the
//! most free slots, so subtasks meet over the network and one worker's loss takes as little as
//! possible), records the attempt in Raft, and deploys it to every worker at once.

use super::running::Running;
use super::{refuse_savepoint, Driver, Phase};
use crate::job::{record, Deployment, Failure, JobEvent};
use crate::raft::ProposeError;
use crate::state::{Command, JobState, WorkerId};
use eddy_proto::v1::DeployRequest;
use eddy_runtime::checkpoint::CheckpointStore;

/// Waiting for (or taking) slots for the next attempt.
#[derive(Default)]
pub(super) struct Placing {
    /// Why the job is being (re)started; empty the first time.
    pub reason: String,
}

impl Placing {
    pub async fn on(self, event: JobEvent, driver: &mut Driver) -> Phase {
        let Some(event) = refuse_savepoint(event, "the job is not running yet") else {
            return Phase::Placing(self);
        };
        match event {
            JobEvent::Cancel(reply) => {
                let result = driver.cancel(None).await;
                let done = result.is_ok();
                let _ = reply.send(result);
                if done {
                    Phase::Done
                } else {
                    Phase::Placing(self)
                }
            }
            _ => Phase::Placing(self),
        }
    }

    pub async fn tick(self, driver: &mut Driver) -> Phase {
        let ctx = &driver.ctx;
        let Some(job) = record(ctx, &driver.job) else {
            return Phase::Done;
        };
        if job.state.is_terminal() {
            return Phase::Done;
        }
        // Secret parameters opened: what compiles, and what the workers get over TLS.
        let spec = match ctx.unseal(&job.spec) {
            Ok(s) => s,
            Err(e) => return driver.fail_job(e).await,
        };
        let unsealed = spec.clone();
        let graph = match tokio::task::spawn_blocking(move || spec.compile()).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return driver.fail_job(e.to_string()).await,
            Err(e) => {
                return driver
                    .fail_job(format!("cannot compile the job: {e}"))
                    .await
            }
        };
        let need = job.parallelism as usize;
        let (slots, free_total, live) = ctx.raft.with_state(|s| {
            let mut free = s.free_slots_except(&job.id);
            let total: u32 = free.values().sum();
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
            (slots, total, s.workers.len())
        });
        if slots.len() < need {
            let message = format!(
                "waiting for slots: needs {need}, {free_total} free on {live} live workers{}",
                if self.reason.is_empty() {
                    String::new()
                } else {
                    format!(" (restarting: {})", self.reason)
                }
            );
            if job.state != JobState::WaitingForSlots || job.message != message {
                let _ = ctx
                    .raft
                    .propose(Command::SetJobState {
                        job: job.id.clone(),
                        state: JobState::WaitingForSlots,
                        message,
                    })
                    .await;
            }
            return Phase::Placing(self);
        }
        let attempt = job.attempt + 1;
        match ctx
            .raft
            .propose(Command::StartAttempt {
                job: job.id.clone(),
                attempt,
                slots: slots.clone(),
            })
            .await
        {
            Ok(_) => {}
            // Cancelled meanwhile, or the slots went to another job: look again next tick.
            Err(ProposeError::Rejected(reason)) => {
                tracing::debug!(job = %job.id, %reason, "attempt not started");
                return Phase::Placing(self);
            }
            Err(e) => {
                tracing::debug!(job = %job.id, error = %e, "attempt not started");
                return Phase::Placing(self);
            }
        }
        let (job, deployment) = match ctx.raft.with_state(|s| {
            let job = s.jobs.get(&job.id).cloned()?;
            let deployment = Deployment::plan(&graph, &job.slots, s)?;
            Some((job, deployment))
        }) {
            Some(found) => found,
            None => return Phase::Placing(self),
        };
        let job_json = match serde_json::to_vec(&unsealed) {
            Ok(j) => j,
            Err(e) => return driver.fail_job(format!("cannot encode the job: {e}")).await,
        };
        let (restore_checkpoint, restore_dir) = match &job.last_checkpoint {
            Some(c) => (c.id, c.location.clone()),
            None => (0, String::new()),
        };
        if job.spec.checkpoint_interval_ms > 0 {
            // No checkpoint of the job is being written now: what earlier attempts left
            // unfinished goes, the restore point stays.
            let dir = std::path::PathBuf::from(&job.spec.checkpoint_dir);
            let keep = (restore_dir == job.spec.checkpoint_dir).then_some(restore_checkpoint);
            let retain = job.spec.retain_checkpoints.max(1) as usize;
            let pruned = tokio::task::spawn_blocking(move || {
                CheckpointStore::open_dir(&dir)?.prune_keeping(retain, keep)
            })
            .await;
            if let Ok(Err(e)) = pruned {
                tracing::warn!(job = %job.id, error = %e, "cannot prune the checkpoint directory");
            }
        }
        tracing::info!(job = %job.id, attempt, restore_checkpoint, "deploying");
        let workers = deployment.workers();
        let request = DeployRequest {
            job_id: job.id.clone(),
            attempt,
            job_json,
            tasks: Vec::new(),
            task_addrs: deployment.task_addrs.clone(),
            restore_checkpoint,
            restore_dir,
            first_checkpoint: job.max_checkpoint_id + 1,
        };
        let outcomes = ctx
            .workers
            .call_all(
                workers.iter().cloned(),
                ctx.options.deploy_timeout,
                |addr, mut c| {
                    let mut r = request.clone();
                    r.tasks = deployment.per_worker.get(addr).cloned().unwrap_or_default();
                    async move { c.deploy(r).await }
                },
            )
            .await;
        let mut failure: Option<Failure> = None;
        for (addr, result) in outcomes {
            let Err(status) = result else { continue };
            let f = if status.code() == tonic::Code::Unavailable {
                // The worker is gone before its heartbeats ran out: declare it lost now.
                let id = ctx
                    .raft
                    .with_state(|s| s.workers.values().find(|w| w.addr == addr).map(|w| w.id));
                if let Some(id) = id {
                    tracing::warn!(worker = id, %addr, "worker unreachable while deploying");
                    let _ = ctx.raft.propose(Command::RemoveWorker { id }).await;
                    ctx.workers.forget(&addr);
                }
                Failure::transient(format!("worker at {addr} is unreachable"))
            } else {
                Failure {
                    domain: eddy_proto::convert::domain_of(&status),
                    message: format!("deploying to {addr} failed: {}", status.message()),
                }
            };
            // Of several failures, the one that says most (a user error over a lost peer).
            failure = Some(match failure {
                Some(prev) if prev.domain.most_telling(f.domain) == prev.domain => prev,
                _ => f,
            });
        }
        if let Some(f) = failure {
            return driver.after_failure(attempt, &workers, f).await;
        }
        Phase::Running(Box::new(Running::deployed(
            driver, &job, &graph, attempt, workers,
        )))
    }
}

//! A job's states on the leader, one file each, and the loop that drives them.
//!
//! ```text
//!            ┌──────────── cancel / user error / too many failures ────────────┐
//!            v                                                                  │
//!  Done <── Placing ──(StartAttempt in Raft, deployed)──> Running ──(finished)──┴─> Done
//!            ^   └─(not enough slots: waiting-for-slots)      │
//!            │                                                │ failure (transient / internal)
//!            └──────────── (backoff over) ─── Restarting <────┘
//! ```
//! A new leader starts each running job in `Running` by adopting its attempt (the workers say
//! what they still run and which tasks finished), or in `Restarting` when it cannot.

mod placing;
mod restarting;
mod running;

use super::restart::{Decision, RestartState};
use super::{record, stop_attempt, Ctx, Failure, JobEvent};
use crate::error::CoordinatorError;
use crate::state::{Command, JobState};
use placing::Placing;
use restarting::Restarting;
use running::Running;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Where a job is, on this leader.
enum Phase {
    Placing(Placing),
    Running(Box<Running>),
    Restarting(Restarting),
    /// The job is terminal in Raft: the driver ends.
    Done,
}

/// What every state reads and keeps across states.
struct Driver {
    ctx: Arc<Ctx>,
    job: String,
    restart: RestartState,
}

impl Driver {
    /// Fails the job in Raft with `message` (a rejected proposal means it is already over).
    async fn fail_job(&self, message: String) -> Phase {
        tracing::warn!(job = %self.job, %message, "job failed");
        let proposed = self
            .ctx
            .raft
            .propose(Command::SetJobState {
                job: self.job.clone(),
                state: JobState::Failed,
                message,
            })
            .await;
        match proposed {
            Ok(_) | Err(crate::raft::ProposeError::Rejected(_)) => Phase::Done,
            // Not the leader any more: the next one decides.
            Err(_) => Phase::Done,
        }
    }

    /// After attempt `attempt` on `workers` failed: stop it, then restart it after a backoff
    /// or fail the job, as the failure's domain and the restart history say.
    async fn after_failure(
        &mut self,
        attempt: u64,
        workers: &BTreeSet<String>,
        failure: Failure,
    ) -> Phase {
        stop_attempt(&self.ctx, &self.job, attempt, workers).await;
        match self
            .restart
            .on_failure(failure.domain, &self.ctx.options.restart)
        {
            Decision::Fail(why) => self.fail_job(format!("{} ({why})", failure.message)).await,
            Decision::RestartAfter(delay) => {
                tracing::warn!(
                    job = %self.job,
                    attempt,
                    domain = failure.domain.name(),
                    reason = %failure.message,
                    delay_ms = delay.as_millis() as u64,
                    "restarting from the last checkpoint"
                );
                let _ = self
                    .ctx
                    .raft
                    .propose(Command::SetJobState {
                        job: self.job.clone(),
                        state: JobState::Running,
                        message: format!(
                            "restarting in {:.1} s: {}",
                            delay.as_secs_f64(),
                            failure.message
                        ),
                    })
                    .await;
                Phase::Restarting(Restarting {
                    until: Instant::now() + delay,
                    failed_attempt: attempt,
                    failure,
                })
            }
        }
    }

    /// Cancels the job at a user's request: recorded in Raft first, then the attempt stopped,
    /// so that when the user hears "cancelled" nothing of it runs where the leader can reach.
    async fn cancel(
        &self,
        attempt: Option<(u64, &BTreeSet<String>)>,
    ) -> Result<(), CoordinatorError> {
        self.ctx
            .raft
            .propose(Command::SetJobState {
                job: self.job.clone(),
                state: JobState::Cancelled,
                message: "cancelled by a user".into(),
            })
            .await?;
        if let Some((attempt, workers)) = attempt {
            stop_attempt(&self.ctx, &self.job, attempt, workers).await;
        }
        Ok(())
    }
}

/// Runs a job's driver until the job is terminal (or the task is aborted: leadership lost).
pub(super) async fn drive(
    ctx: Arc<Ctx>,
    job: String,
    mut events: mpsc::UnboundedReceiver<JobEvent>,
) {
    let tick_every = ctx.options.tick;
    let mut driver = Driver {
        ctx,
        job,
        restart: RestartState::default(),
    };
    let mut phase = start(&mut driver).await;
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Phase::Done = phase {
            tracing::debug!(job = %driver.job, "driver done");
            return;
        }
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(e) => Some(e),
                None => return,
            },
            _ = tick.tick() => None,
        };
        phase = match (phase, event) {
            (Phase::Placing(p), None) => p.tick(&mut driver).await,
            (Phase::Placing(p), Some(e)) => p.on(e, &mut driver).await,
            (Phase::Running(r), None) => r.tick(&mut driver).await,
            (Phase::Running(r), Some(e)) => r.on(e, &mut driver).await,
            (Phase::Restarting(r), None) => r.tick(&mut driver).await,
            (Phase::Restarting(r), Some(e)) => r.on(e, &mut driver).await,
            (Phase::Done, _) => Phase::Done,
        };
    }
}

/// The state a driver starts in: what Raft says, adopting a running attempt when it can.
async fn start(driver: &mut Driver) -> Phase {
    let Some(job) = record(&driver.ctx, &driver.job) else {
        return Phase::Done;
    };
    match job.state {
        s if s.is_terminal() => Phase::Done,
        JobState::Running if job.attempt > 0 => match running::adopt(driver, &job).await {
            Ok(running) => {
                tracing::info!(job = %job.id, attempt = job.attempt, "adopted the running attempt");
                Phase::Running(Box::new(running))
            }
            Err(failure) => {
                let workers: BTreeSet<String> = driver.ctx.raft.with_state(|s| {
                    job.slots
                        .iter()
                        .filter_map(|w| s.workers.get(w).map(|w| w.addr.clone()))
                        .collect()
                });
                tracing::info!(job = %job.id, reason = %failure.message, "cannot adopt the attempt");
                stop_attempt(&driver.ctx, &job.id, job.attempt, &workers).await;
                Phase::Restarting(Restarting {
                    until: Instant::now(),
                    failed_attempt: job.attempt,
                    failure,
                })
            }
        },
        _ => Phase::Placing(Placing::default()),
    }
}

/// Answers a savepoint request that cannot be served in the current state.
fn refuse_savepoint(event: JobEvent, why: &str) -> Option<JobEvent> {
    match event {
        JobEvent::Savepoint { reply, .. } => {
            let _ = reply.send(Err(CoordinatorError::State(why.to_string())));
            None
        }
        other => Some(other),
    }
}

/// How long to wait between two tries of something that keeps failing.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

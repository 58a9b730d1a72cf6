//! What only the leader does: watch worker heartbeats (a worker silent too long is removed in
//! Raft), and keep one driver per live job ([`crate::job`]) that schedules its attempts and
//! drives its checkpoints.
//!
//! Everything here is soft state, rebuilt by a node when it becomes leader: heartbeats start
//! afresh, and every job gets a new driver that adopts its running attempt from what Raft and
//! the workers hold (docs/cluster.md). When the node stops being the leader, its drivers are
//! aborted at once.

use crate::job::restart::RestartPolicy;
use crate::job::{Counters, CountersFrom, Ctx, JobEvent, JobHandle};
use crate::raft::RaftNode;
use crate::state::{Command, WorkerId};
use crate::workers::WorkerClients;
use eddy_proto::v1::AttemptMetrics;
use eddy_runtime::checkpoint::coordinator::CheckpointLimits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Timing of failure detection, scheduling, checkpoints and restarts.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    /// A worker silent this long is declared lost.
    pub worker_timeout: Duration,
    /// How often the leader and each job's driver look around.
    pub tick: Duration,
    /// When a failed attempt is restarted, and when the job fails instead.
    pub restart: RestartPolicy,
    /// Checkpoint timeout and tolerated failures.
    pub checkpoints: CheckpointLimits,
    /// A deployment may take this long (it restores state and commits the restored checkpoint).
    pub deploy_timeout: Duration,
    /// Triggers, cancels and other small calls to a worker.
    pub rpc_timeout: Duration,
    /// A worker's commit of a checkpoint (renames, a PostgreSQL transaction).
    pub commit_timeout: Duration,
    /// The key of secret job parameters; without it, secret parameters are refused.
    pub secrets: Option<eddy_security::secrets::SecretKey>,
}

impl Default for LeaderOptions {
    fn default() -> Self {
        LeaderOptions {
            worker_timeout: Duration::from_secs(3),
            tick: Duration::from_millis(100),
            restart: RestartPolicy::default(),
            checkpoints: CheckpointLimits::default(),
            deploy_timeout: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(30),
            secrets: None,
        }
    }
}

/// Leader-local state.
#[derive(Default)]
struct Soft {
    /// The term this node leads in; `None` while it does not lead.
    term: Option<u64>,
    heartbeats: HashMap<WorkerId, Instant>,
    /// When lost workers were last looked for.
    last_check: Option<Instant>,
    drivers: HashMap<String, JobHandle>,
}

/// The leader's side of the coordinator, shared by its services and its loop.
pub struct Leader {
    pub raft: RaftNode,
    ctx: Arc<Ctx>,
    soft: Mutex<Soft>,
}

impl Leader {
    pub fn new(raft: RaftNode, options: LeaderOptions) -> Leader {
        Leader {
            ctx: Arc::new(Ctx {
                raft: raft.clone(),
                workers: WorkerClients::default(),
                options,
                counters: Mutex::new(Counters::default()),
            }),
            raft,
            soft: Mutex::default(),
        }
    }

    pub fn options(&self) -> &LeaderOptions {
        &self.ctx.options
    }

    /// What the job drivers share (counters for `eddy status`).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Soft> {
        self.soft.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round of the leader's duties; on a follower it only makes sure nothing of a past
    /// leadership keeps running.
    pub async fn tick(&self) {
        let status = self.raft.status();
        if !status.is_leader {
            let mut soft = self.lock();
            if soft.term.is_some() {
                tracing::info!(node = self.raft.id(), "no longer the leader");
                *soft = Soft::default(); // drops (aborts) every driver
            }
            return;
        }
        {
            let mut soft = self.lock();
            if soft.term != Some(status.term) {
                tracing::info!(
                    node = self.raft.id(),
                    term = status.term,
                    "became the leader"
                );
                let now = Instant::now();
                soft.term = Some(status.term);
                soft.drivers.clear();
                soft.heartbeats = self
                    .raft
                    .with_state(|s| s.workers.keys().map(|id| (*id, now)).collect());
            }
        }
        self.detect_lost_workers().await;
        self.start_drivers();
    }

    async fn detect_lost_workers(&self) {
        let timeout = self.ctx.options.worker_timeout;
        let lost: Vec<(WorkerId, String)> = {
            let mut soft = self.lock();
            let now = Instant::now();
            let gap = soft.last_check.map_or(Duration::ZERO, |t| now - t);
            soft.last_check = Some(now);
            if gap > timeout / 2 {
                // This process did not run for a while (paused, starved): the heartbeats of
                // that time are not processed yet, and silence says nothing about the workers.
                // A leader resumed from a 2 s pause declared every worker lost.
                tracing::warn!(
                    gap_ms = gap.as_millis() as u64,
                    "the leader did not run for a while; heartbeats are awaited afresh"
                );
                for seen in soft.heartbeats.values_mut() {
                    *seen = now;
                }
                return;
            }
            self.raft.with_state(|s| {
                s.workers
                    .values()
                    .filter(|w| {
                        let seen = *soft.heartbeats.entry(w.id).or_insert(now);
                        now.duration_since(seen) > timeout
                    })
                    .map(|w| (w.id, w.addr.clone()))
                    .collect()
            })
        };
        for (id, addr) in lost {
            tracing::warn!(worker = id, %addr, "worker lost (no heartbeat)");
            if self
                .raft
                .propose(Command::RemoveWorker { id })
                .await
                .is_err()
            {
                return;
            }
            metrics::counter!("eddy_workers_lost_total").increment(1);
            self.ctx.workers.forget(&addr);
            let soft = &mut *self.lock();
            soft.heartbeats.remove(&id);
            for driver in soft.drivers.values() {
                driver.send(JobEvent::WorkerLost {
                    addr: addr.clone(),
                    reason: format!("worker {id} at {addr} was lost"),
                });
            }
        }
    }

    /// Every live job has a driver; drivers of ended jobs are dropped.
    fn start_drivers(&self) {
        let live: Vec<String> = self.raft.with_state(|s| {
            s.jobs
                .values()
                .filter(|j| !j.state.is_terminal())
                .map(|j| j.id.clone())
                .collect()
        });
        let mut soft = self.lock();
        soft.drivers.retain(|_, d| !d.is_finished());
        for job in live {
            soft.drivers
                .entry(job.clone())
                .or_insert_with(|| JobHandle::spawn(Arc::clone(&self.ctx), job));
        }
        drop(soft);
        self.ctx
            .counters()
            .retain(|job| self.raft.with_state(|s| s.jobs.contains_key(job)));
    }

    /// Hands an event to a job's driver; false when the job has none (not live, or the
    /// leader just changed).
    pub fn send(&self, job: &str, event: JobEvent) -> bool {
        self.lock().drivers.get(job).is_some_and(|d| d.send(event))
    }

    /// A worker registered (again).
    pub fn registered(&self, id: WorkerId) {
        self.lock().heartbeats.insert(id, Instant::now());
    }

    /// A worker's heartbeat, with its task counters; false when the worker is not (any
    /// more) registered.
    pub fn heartbeat(&self, worker: WorkerId, attempts: Vec<AttemptMetrics>) -> bool {
        if !self.raft.with_state(|s| s.workers.contains_key(&worker)) {
            return false;
        }
        self.lock().heartbeats.insert(worker, Instant::now());
        let mut counters = self.ctx.counters();
        for a in attempts {
            counters.record(
                &a.job_id,
                a.attempt,
                worker,
                a.tasks,
                CountersFrom::Heartbeat,
            );
        }
        true
    }

    /// How long ago a worker was last heard from.
    pub fn last_heartbeat(&self, worker: WorkerId) -> Option<Duration> {
        self.lock().heartbeats.get(&worker).map(Instant::elapsed)
    }
}

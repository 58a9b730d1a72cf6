//! The faults: what kinds there are, and the seeded schedule of them.
//!
//! A schedule is drawn from the seed before the run starts, so the same seed gives the same
//! faults in the same order with the same durations and targets. Targets that depend on the
//! run (which node is the Raft leader) are resolved when the fault is injected.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// A kind of fault (`--kinds` takes these names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of a coordinator (the leader half of the time), restarted after a delay.
    KillCoordinator,
    /// SIGKILL of all three coordinators at once, restarted after a delay.
    KillAllCoordinators,
    /// SIGSTOP of a coordinator (the leader half of the time) for 0.1-10 s, then SIGCONT.
    PauseCoordinator,
    /// SIGKILL of a worker, restarted after a delay.
    KillWorker,
    /// SIGSTOP of a worker for 0.1-10 s.
    PauseWorker,
    /// One node cut off from every other, both ways.
    PartitionNode,
    /// The Raft leader cut off from the workers (it still reaches the other coordinators).
    PartitionLeaderFromWorkers,
    /// Two workers cut off from each other.
    PartitionWorkers,
    /// What one node sends to another is held; the other way works.
    OneWayDrop,
    /// 20-200 ms of latency with jitter on every link of one node.
    Latency,
    /// Every connection of one node reset (RST) mid-stream.
    ResetConnections,
    /// A worker's state and checkpoint file systems full (ENOSPC); needs root.
    DiskFull,
    /// Writes of a worker to checkpoint, state and output fail with EIO.
    IoErrors,
    /// Every sync of a worker takes 0.2-1 s.
    SlowFsync,
    /// PostgreSQL stopped and started again (scenarios with a warehouse).
    RestartPostgres,
    /// The Kafka broker stopped and started again, its data kept (scenarios with Kafka).
    RestartKafka,
}

impl FaultKind {
    pub const ALL: [FaultKind; 16] = [
        FaultKind::KillCoordinator,
        FaultKind::KillAllCoordinators,
        FaultKind::PauseCoordinator,
        FaultKind::KillWorker,
        FaultKind::PauseWorker,
        FaultKind::PartitionNode,
        FaultKind::PartitionLeaderFromWorkers,
        FaultKind::PartitionWorkers,
        FaultKind::OneWayDrop,
        FaultKind::Latency,
        FaultKind::ResetConnections,
        FaultKind::DiskFull,
        FaultKind::IoErrors,
        FaultKind::SlowFsync,
        FaultKind::RestartPostgres,
        FaultKind::RestartKafka,
    ];

    /// The name used by `--kinds` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillCoordinator => "kill-coordinator",
            FaultKind::KillAllCoordinators => "kill-all-coordinators",
            FaultKind::PauseCoordinator => "pause-coordinator",
            FaultKind::KillWorker => "kill-worker",
            FaultKind::PauseWorker => "pause-worker",
            FaultKind::PartitionNode => "partition-node",
            FaultKind::PartitionLeaderFromWorkers => "partition-leader-from-workers",
            FaultKind::PartitionWorkers => "partition-workers",
            FaultKind::OneWayDrop => "one-way-drop",
            FaultKind::Latency => "latency",
            FaultKind::ResetConnections => "reset-connections",
            FaultKind::DiskFull => "disk-full",
            FaultKind::IoErrors => "io-errors",
            FaultKind::SlowFsync => "slow-fsync",
            FaultKind::RestartPostgres => "restart-postgres",
            FaultKind::RestartKafka => "restart-kafka",
        }
    }

    /// The kind named `name`, or an error listing the names.
    pub fn parse(name: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown fault kind `{name}`; the kinds are: {}",
                    FaultKind::ALL.map(|k| k.name()).join(", ")
                )
            })
    }

    /// How often the kind is drawn relative to the others.
    fn weight(self) -> u32 {
        match self {
            FaultKind::KillAllCoordinators => 1,
            FaultKind::RestartPostgres | FaultKind::RestartKafka => 2,
            _ => 3,
        }
    }
}

/// Which node a fault targets, chosen when the schedule is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The Raft leader at the time of the fault.
    Leader,
    /// Coordinator with this id.
    Coordinator(u64),
    /// Worker with this index.
    Worker(usize),
    /// Two workers.
    Workers(usize, usize),
    /// From one node to another: indices into the node list (coordinators 1-3, then workers).
    Pair(usize, usize),
    /// Everything of its kind (all coordinators, the dependency).
    All,
}

/// One planned fault.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    pub target: Target,
    /// How long it lasts (a pause, a partition) or how long a killed process stays down.
    pub duration: Duration,
    /// Latency faults: the added delay and its jitter.
    pub latency: Duration,
    pub jitter: Duration,
}

/// Draws `count` faults of `kinds` for a cluster of `workers` workers.
pub fn schedule(seed: u64, count: usize, kinds: &[FaultKind], workers: usize) -> Vec<Planned> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total: u32 = kinds.iter().map(|k| k.weight()).sum();
    let nodes = 3 + workers;
    let mut planned = Vec::with_capacity(count);
    // Every kind once first (in a seeded order), so that a short run covers them all.
    let mut first: Vec<FaultKind> = kinds.to_vec();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.random_range(0..=i));
    }
    for i in 0..count {
        let kind = match first.get(i) {
            Some(k) => *k,
            None => {
                let mut pick = rng.random_range(0..total.max(1));
                let mut chosen = kinds[0];
                for k in kinds {
                    if pick < k.weight() {
                        chosen = *k;
                        break;
                    }
                    pick -= k.weight();
                }
                chosen
            }
        };
        let coordinator = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.5) {
                Target::Leader
            } else {
                Target::Coordinator(rng.random_range(1..=3))
            }
        };
        let worker = |rng: &mut ChaCha8Rng| rng.random_range(0..workers.max(1));
        let any_node = |rng: &mut ChaCha8Rng| rng.random_range(0..nodes);
        // Pauses and partitions: mostly short, sometimes up to 10 s.
        let span = |rng: &mut ChaCha8Rng| {
            let ms = if rng.random_bool(0.7) {
                rng.random_range(100..2_000)
            } else {
                rng.random_range(2_000..10_000)
            };
            Duration::from_millis(ms)
        };
        let target = match kind {
            FaultKind::KillCoordinator | FaultKind::PauseCoordinator => coordinator(&mut rng),
            FaultKind::KillAllCoordinators
            | FaultKind::PartitionLeaderFromWorkers
            | FaultKind::RestartPostgres
            | FaultKind::RestartKafka => Target::All,
            FaultKind::KillWorker
            | FaultKind::PauseWorker
            | FaultKind::DiskFull
            | FaultKind::IoErrors
            | FaultKind::SlowFsync => Target::Worker(worker(&mut rng)),
            FaultKind::PartitionWorkers => {
                let a = worker(&mut rng);
                let b = (a + 1 + rng.random_range(0..workers.saturating_sub(1).max(1)))
                    % workers.max(1);
                Target::Workers(a, b)
            }
            FaultKind::PartitionNode | FaultKind::Latency | FaultKind::ResetConnections => {
                Target::Pair(any_node(&mut rng), 0)
            }
            FaultKind::OneWayDrop => {
                let a = any_node(&mut rng);
                let b = (a + 1 + rng.random_range(0..nodes - 1)) % nodes;
                Target::Pair(a, b)
            }
        };
        let duration = match kind {
            FaultKind::KillCoordinator | FaultKind::KillWorker | FaultKind::KillAllCoordinators => {
                Duration::from_millis(rng.random_range(0..3_000))
            }
            FaultKind::RestartPostgres | FaultKind::RestartKafka => {
                Duration::from_millis(rng.random_range(500..4_000))
            }
            FaultKind::ResetConnections => Duration::ZERO,
            _ => span(&mut rng),
        };
        let latency = Duration::from_millis(rng.random_range(20..200));
        let jitter = latency / 2;
        planned.push(Planned {
            kind,
            target,
            duration,
            latency,
            jitter,
        });
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_every_kind_comes_first() {
        let kinds = FaultKind::ALL.to_vec();
        let a = schedule(42, 40, &kinds, 3);
        let b = schedule(42, 40, &kinds, 3);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let c = schedule(43, 40, &kinds, 3);
        assert_ne!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&c).unwrap()
        );
        let mut first: Vec<FaultKind> = a[..kinds.len()].iter().map(|p| p.kind).collect();
        first.sort();
        assert_eq!(first, kinds);
        for p in &a {
            if let Target::Workers(x, y) | Target::Pair(x, y) = p.target {
                if matches!(p.kind, FaultKind::PartitionWorkers | FaultKind::OneWayDrop) {
                    assert_ne!(x, y, "{p:?}");
                }
            }
        }
    }
}

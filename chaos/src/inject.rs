//! Injecting one planned fault into the running cluster, healing it, and measuring how long
//! the job takes to recover: to its next completed checkpoint, and to 90 % of its undisturbed
//! throughput.

use crate::cluster::{Cluster, Node};
use crate::faults::{FaultKind, Planned, Target};
use crate::monitor::{rate, wall_ms, Monitor};
use crate::report::FaultRecord;
use crate::scenario::Dependencies;
use crate::storage::Disks;
use crate::ChaosConfig;
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::ListWorkersRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Injects faults, one at a time.
pub struct Injector {
    fault_dir: PathBuf,
    disks: Disks,
    max_recovery: Duration,
    max_fault_duration: Duration,
    rng: ChaCha8Rng,
    started: Instant,
    /// Processes that exited by themselves (restarted, as a supervisor would).
    pub crashes: Vec<crate::cluster::Crash>,
}

impl Injector {
    pub fn new(config: &ChaosConfig, fault_dir: PathBuf, disks: Disks) -> Injector {
        Injector {
            fault_dir,
            disks,
            max_recovery: config.max_recovery,
            max_fault_duration: config.max_fault_duration,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed),
            started: Instant::now(),
            crashes: Vec::new(),
        }
    }

    /// Where the jobs' checkpoints go (on a file system of its own for disk-full faults).
    pub fn checkpoints(&self) -> &std::path::Path {
        self.disks.checkpoints()
    }

    fn write_faults(&self, worker: usize, text: &str) {
        let path = self.fault_dir.join(format!("w{worker}"));
        let _ = std::fs::write(path, text);
    }

    /// Injects `planned`, holds it, heals it and waits for the job to recover.
    #[allow(clippy::too_many_arguments)]
    pub async fn inject(
        &mut self,
        index: usize,
        planned: &Planned,
        cluster: &mut Cluster,
        deps: &mut Dependencies,
        client: &Coordinators,
        monitor: &Monitor,
        job: &str,
        baseline: Option<f64>,
    ) -> FaultRecord {
        self.crashes.extend(cluster.reap());
        let nodes = cluster.nodes();
        let node_at = |i: usize| nodes[i.min(nodes.len() - 1)];
        let leader = match planned.target {
            Target::Leader | Target::All => leader(client).await,
            _ => None,
        };
        let duration = planned.duration.min(self.max_fault_duration);
        let began = Instant::now();
        let began_ms = self.started.elapsed().as_millis() as u64;
        let target: String;
        match planned.kind {
            FaultKind::KillCoordinator | FaultKind::PauseCoordinator => {
                let id = match planned.target {
                    Target::Coordinator(id) => id,
                    _ => leader.unwrap_or(1),
                };
                let node = Node::Coordinator(id);
                target = format!(
                    "{node}{}",
                    if leader == Some(id) { " (leader)" } else { "" }
                );
                if planned.kind == FaultKind::KillCoordinator {
                    cluster.kill(node);
                    tokio::time::sleep(duration).await;
                    restart(cluster, node);
                } else {
                    cluster.pause(node);
                    tokio::time::sleep(duration).await;
                    cluster.resume(node);
                }
            }
            FaultKind::KillAllCoordinators => {
                target = "c1, c2, c3".into();
                for id in 1..=3 {
                    cluster.kill(Node::Coordinator(id));
                }
                tokio::time::sleep(duration).await;
                for id in 1..=3 {
                    restart(cluster, Node::Coordinator(id));
                }
            }
            FaultKind::KillWorker | FaultKind::PauseWorker => {
                let node = match planned.target {
                    Target::Worker(w) => Node::Worker(w),
                    _ => Node::Worker(0),
                };
                target = node.to_string();
                if planned.kind == FaultKind::KillWorker {
                    cluster.kill(node);
                    tokio::time::sleep(duration).await;
                    restart(cluster, node);
                } else {
                    cluster.pause(node);
                    tokio::time::sleep(duration).await;
                    cluster.resume(node);
                }
            }
            FaultKind::PartitionNode => {
                let Target::Pair(a, _) = planned.target else {
                    unreachable!("drawn with a node")
                };
                let node = node_at(a);
                target = format!("{node} from every other node");
                hold(cluster, |from, to| from == node || to == node, true, true);
                tokio::time::sleep(duration).await;
                heal(cluster);
            }
            FaultKind::PartitionLeaderFromWorkers => {
                let l = Node::Coordinator(leader.unwrap_or(1));
                target = format!("{l} (leader) from the workers");
                hold(
                    cluster,
                    |from, to| {
                        (from == l && matches!(to, Node::Worker(_)))
                            || (to == l && matches!(from, Node::Worker(_)))
                    },
                    true,
                    true,
                );
                tokio::time::sleep(duration).await;
                heal(cluster);
            }
            FaultKind::PartitionWorkers => {
                let Target::Workers(a, b) = planned.target else {
                    unreachable!("drawn with two workers")
                };
                let (a, b) = (Node::Worker(a), Node::Worker(b));
                target = format!("{a} from {b}");
                hold(
                    cluster,
                    |from, to| (from == a && to == b) || (from == b && to == a),
                    true,
                    true,
                );
                tokio::time::sleep(duration).await;
                heal(cluster);
            }
            FaultKind::OneWayDrop => {
                let Target::Pair(a, b) = planned.target else {
                    unreachable!("drawn with a pair")
                };
                let (a, b) = (node_at(a), node_at(b));
                target = format!("{a} -> {b}");
                // What a sends to b: requests on a's connections, answers on b's.
                if let Some(link) = cluster.link(a, b) {
                    link.update(|s| s.hold_forward = true);
                }
                if let Some(link) = cluster.link(b, a) {
                    link.update(|s| s.hold_backward = true);
                }
                tokio::time::sleep(duration).await;
                heal(cluster);
            }
            FaultKind::Latency => {
                let Target::Pair(a, _) = planned.target else {
                    unreachable!("drawn with a node")
                };
                let node = node_at(a);
                target = format!(
                    "{node}: {} ms ± {} ms",
                    planned.latency.as_millis(),
                    planned.jitter.as_millis()
                );
                for ((from, to), link) in cluster.links() {
                    if *from == node || *to == node {
                        link.update(|s| {
                            s.latency = planned.latency;
                            s.jitter = planned.jitter;
                        });
                    }
                }
                tokio::time::sleep(duration).await;
                heal(cluster);
            }
            FaultKind::ResetConnections => {
                let Target::Pair(a, _) = planned.target else {
                    unreachable!("drawn with a node")
                };
                let node = node_at(a);
                target = format!("every connection of {node}");
                for ((from, to), link) in cluster.links() {
                    if *from == node || *to == node {
                        link.update(|s| s.resets += 1);
                    }
                }
            }
            FaultKind::DiskFull => {
                let w = worker_of(planned.target);
                target = format!("w{w} state and the checkpoint file system");
                self.disks.fill(w);
                tokio::time::sleep(duration).await;
                self.disks.free();
            }
            FaultKind::IoErrors => {
                let w = worker_of(planned.target);
                target = format!("w{w} checkpoint, state and output writes");
                self.write_faults(w, "io_error=checkpoint,state,output\n");
                tokio::time::sleep(duration).await;
                self.write_faults(w, "");
            }
            FaultKind::SlowFsync => {
                let w = worker_of(planned.target);
                let ms = self.rng.random_range(200..1000);
                target = format!("w{w}: {ms} ms per sync");
                self.write_faults(w, &format!("slow_sync_ms={ms}\n"));
                tokio::time::sleep(duration).await;
                self.write_faults(w, "");
            }
            FaultKind::RestartPostgres => {
                target = "PostgreSQL (crash, restart, recovery from its WAL)".into();
                if let Some(pg) = deps.postgres.as_mut() {
                    pg.crash();
                    tokio::time::sleep(duration).await;
                    if let Err(e) = crate::off_runtime(|| pg.start_again()) {
                        tracing::error!(error = %e, "PostgreSQL did not start again");
                    }
                }
            }
            FaultKind::RestartKafka => {
                target = "the Kafka broker (SIGKILL, restart, its log kept)".into();
                if let Some(broker) = deps.broker.as_mut() {
                    broker.kill();
                    tokio::time::sleep(duration).await;
                    if let Err(e) = broker.start_again() {
                        tracing::error!(error = %e, "the broker did not start again");
                    }
                }
            }
        }
        self.crashes.extend(cluster.reap());
        let healed = Instant::now();
        let healed_ms = wall_ms();
        let (checkpoint, throughput) = self
            .recovery(monitor, job, healed, healed_ms, baseline)
            .await;
        let bound = self.max_recovery.as_millis() as u64;
        let within_bound =
            checkpoint.is_some_and(|ms| ms <= bound) && throughput.is_none_or(|ms| ms <= bound);
        // A breath between faults, seeded too.
        let gap = Duration::from_millis(self.rng.random_range(200..800));
        tokio::time::sleep(gap).await;
        FaultRecord {
            index,
            kind: planned.kind,
            target,
            at_ms: began_ms,
            duration_ms: healed.duration_since(began).as_millis() as u64,
            checkpoint_recovery_ms: checkpoint,
            throughput_recovery_ms: throughput,
            within_bound,
        }
    }

    /// Time from the heal to the job's next completed checkpoint, and to a second of source
    /// throughput at 90 % of `baseline`; `None` where it did not come within the wait.
    async fn recovery(
        &self,
        monitor: &Monitor,
        job: &str,
        healed: Instant,
        healed_ms: u64,
        baseline: Option<f64>,
    ) -> (Option<u64>, Option<u64>) {
        let wait = (self.max_recovery * 2).max(Duration::from_secs(20));
        let mut checkpoint = None;
        let mut throughput = None;
        while healed.elapsed() < wait {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let samples = monitor.since(job, healed);
            if let Some(last) = samples.last() {
                if last.terminal {
                    checkpoint.get_or_insert(last.at.duration_since(healed).as_millis() as u64);
                    break;
                }
            }
            if checkpoint.is_none() {
                checkpoint = samples
                    .iter()
                    .find(|s| s.last_checkpoint_at_ms > healed_ms)
                    .map(|s| s.last_checkpoint_at_ms - healed_ms);
            }
            if throughput.is_none() {
                if let Some(base) = baseline {
                    'found: for (i, a) in samples.iter().enumerate() {
                        for b in &samples[i + 1..] {
                            if b.at.duration_since(a.at) >= Duration::from_secs(1) {
                                if rate(a, b).is_some_and(|r| r >= 0.9 * base) {
                                    throughput =
                                        Some(a.at.duration_since(healed).as_millis() as u64);
                                    break 'found;
                                }
                                break;
                            }
                        }
                    }
                }
            }
            if checkpoint.is_some() && (throughput.is_some() || baseline.is_none()) {
                break;
            }
        }
        (checkpoint, throughput)
    }

    /// Ends every fault still in effect: links healed, processes resumed and restarted, disks
    /// freed, fault files emptied.
    pub async fn heal_all(&mut self, cluster: &mut Cluster, deps: &mut Dependencies) {
        self.crashes.extend(cluster.reap());
        heal(cluster);
        if let Some(pg) = deps.postgres.as_mut() {
            if !pg.is_running() {
                let _ = crate::off_runtime(|| pg.start_again());
            }
        }
        if let Some(broker) = deps.broker.as_mut() {
            if !broker.is_running() {
                let _ = broker.start_again();
            }
        }
        for node in cluster.nodes() {
            cluster.resume(node);
            restart(cluster, node);
        }
        self.disks.free();
        for w in cluster.workers() {
            if let Node::Worker(i) = w {
                self.write_faults(i, "");
            }
        }
    }
}

fn worker_of(target: Target) -> usize {
    match target {
        Target::Worker(w) => w,
        _ => 0,
    }
}

fn restart(cluster: &mut Cluster, node: Node) {
    if let Err(e) = cluster.restart(node) {
        tracing::error!(%node, error = %e, "cannot restart");
    }
}

fn hold(cluster: &Cluster, which: impl Fn(Node, Node) -> bool, forward: bool, backward: bool) {
    for ((from, to), link) in cluster.links() {
        if which(*from, *to) {
            link.update(|s| {
                s.hold_forward |= forward;
                s.hold_backward |= backward;
            });
        }
    }
}

fn heal(cluster: &Cluster) {
    for (_, link) in cluster.links() {
        link.heal();
    }
}

/// The Raft leader's id, as the cluster reports it.
async fn leader(client: &Coordinators) -> Option<u64> {
    client
        .call(Duration::from_secs(5), |c| async move {
            eddy_proto::net::client_api(c)
                .list_workers(ListWorkersRequest {})
                .await
                .map(|r| r.into_inner().leader)
        })
        .await
        .ok()
        .filter(|l| *l > 0)
}

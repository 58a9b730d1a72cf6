//! The cluster as users and operators meet it: three `eddy coordinator` processes and two
//! `eddy worker` processes on loopback (ephemeral ports, temporary directories, real RocksDB),
//! driven with the `eddy` client commands. Jobs read the shared Nexmark input and their
//! committed output must equal Apache Flink's answer, also after a worker or the Raft leader is
//! killed with SIGKILL in the middle of a job.

mod common;

use common::{assert_committed_equals_flink, input, repo, wait_bounded};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn eddy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.env("RUST_LOG", "warn,openraft=error");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Processes of one cluster; all killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    peers: Vec<String>,
    coordinators: Vec<Option<Child>>,
    workers: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .coordinators
            .iter_mut()
            .chain(self.workers.iter_mut())
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn start(workers: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut cluster = Cluster {
            dir,
            peers,
            coordinators: Vec::new(),
            workers: Vec::new(),
        };
        for id in 1..=3 {
            let child = cluster.spawn_coordinator(id);
            cluster.coordinators.push(Some(child));
        }
        for i in 0..workers {
            let child = eddy()
                .arg("worker")
                .args(["--coordinators", &cluster.peers.join(",")])
                .args(["--listen", "127.0.0.1:0", "--slots", "2"])
                .args(["--heartbeat", "200ms"])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("w{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            cluster.workers.push(Some(child));
        }
        // Ready when both workers are registered with a leader.
        let started = Instant::now();
        loop {
            let out = cluster.client(&["workers"]);
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            if out.status.success() && lines == workers {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn spawn_coordinator(&self, id: usize) -> Child {
        let peers: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        eddy()
            .arg("coordinator")
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.peers[id - 1]])
            .args(["--peers", &peers.join(",")])
            .args(["--worker-timeout", "1500ms"])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("c{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs a client command against the coordinators (bounded).
    fn client(&self, args: &[&str]) -> Output {
        let child = eddy()
            .args(args)
            .env("EDDY_COORDINATORS", self.peers.join(","))
            .args(["--timeout", "10s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(60))
    }

    fn submit(&self, query: &str, out: &str) -> String {
        self.submit_with(query, out, &[])
    }

    /// Submits with a paced source, so that a failure injected after the first checkpoint
    /// lands while the job runs, on any machine.
    fn submit_paced(&self, query: &str, out: &str) -> String {
        self.submit_with(query, out, &["--max-rate", "40000"])
    }

    fn submit_with(&self, query: &str, out: &str, extra: &[&str]) -> String {
        let job = repo().join(format!("jobs/nexmark/{query}.toml"));
        let input = format!("input={}", input().display());
        let output = format!("output={}/", self.dir.path().join(out).display());
        let ckpt = self.dir.path().join(format!("{out}-ckpt"));
        let mut args = vec![
            "submit",
            job.to_str().unwrap(),
            "--param",
            &input,
            "--param",
            &output,
            "--parallelism",
            "2",
            "--checkpoint-interval",
            "100ms",
            "--checkpoint-dir",
            ckpt.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = self.client(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn status(&self, job: &str) -> String {
        let out = self.client(&["status", job]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_finished(&self, job: &str) -> String {
        let out = self.client(&["status", job, "--wait", "--wait-timeout", "50s"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{job} did not finish: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// The id of the current leader, from `eddy status`/`list` output (`leader: N`).
    fn leader(&self) -> usize {
        let out = self.client(&["list"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("leader: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no leader in: {text}"))
    }

    /// Waits until checkpoint >= `n` of `job` completed (or the job ended).
    fn wait_checkpoint(&self, job: &str, n: u64) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let s = self.status(job);
            if s.contains(": finished") {
                return false;
            }
            let last = s
                .lines()
                .find_map(|l| l.strip_prefix("last checkpoint: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if last >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no checkpoint {n} of {job} within 30 s");
    }

    fn assert_output_equals_flink(&self, query: &str, out: &str) {
        assert_committed_equals_flink(
            &self.dir.path().join(out),
            query,
            &self.dir.path().join(format!("{out}.jsonl")),
        );
    }
}

#[test]
fn q5_and_q8_on_two_workers_equal_flink() {
    let cluster = Cluster::start(2);
    let workers = cluster.client(&["workers"]);
    assert_eq!(String::from_utf8_lossy(&workers.stdout).lines().count(), 2);
    let q5 = cluster.submit("q5", "q5");
    let q8 = cluster.submit("q8", "q8");
    let status = cluster.wait_finished(&q5);
    assert!(status.contains("leader: "), "{status}");
    cluster.wait_finished(&q8);
    cluster.assert_output_equals_flink("q5", "q5");
    cluster.assert_output_equals_flink("q8", "q8");
}

#[test]
fn a_killed_worker_loses_nothing() {
    let mut cluster = Cluster::start(2);
    let job = cluster.submit_paced("q5", "q5");
    assert!(
        cluster.wait_checkpoint(&job, 1),
        "finished before a checkpoint"
    );
    let mut victim = cluster.workers[1].take().unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let status = cluster.wait_finished(&job);
    assert!(!status.contains("(0 restarts)"), "{status}");
    cluster.assert_output_equals_flink("q5", "q5");
    let workers = cluster.client(&["workers"]);
    assert_eq!(
        String::from_utf8_lossy(&workers.stdout).lines().count(),
        1,
        "the killed worker is declared lost"
    );
}

#[test]
fn a_killed_leader_is_replaced_and_rejoins() {
    let mut cluster = Cluster::start(2);
    let job = cluster.submit_paced("q8", "q8");
    assert!(
        cluster.wait_checkpoint(&job, 1),
        "finished before a checkpoint"
    );
    let old = cluster.leader();
    let mut victim = cluster.coordinators[old - 1].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    // A new leader answers; the job completes with the same output.
    let list = cluster.client(&["list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let new = cluster.leader();
    assert_ne!(new, old);
    cluster.wait_finished(&job);
    cluster.assert_output_equals_flink("q8", "q8");
    // The old leader restarts from its data directory and rejoins: with the new leader killed
    // too, the remaining two (one of them the restarted node) still form a majority that knows
    // the job.
    cluster.coordinators[old - 1] = Some(cluster.spawn_coordinator(old));
    std::thread::sleep(Duration::from_secs(2));
    let mut second = cluster.coordinators[new - 1].take().unwrap();
    second.kill().unwrap();
    second.wait().unwrap();
    let list = cluster.client(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(text.contains(&job) && text.contains("finished"), "{text}");
}

#[test]
fn a_killed_follower_stops_nothing() {
    let mut cluster = Cluster::start(2);
    let job = cluster.submit_paced("q5", "q5");
    assert!(
        cluster.wait_checkpoint(&job, 1),
        "finished before a checkpoint"
    );
    let leader = cluster.leader();
    let follower = if leader == 1 { 2 } else { 1 };
    let mut victim = cluster.coordinators[follower - 1].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let status = cluster.wait_finished(&job);
    assert!(status.contains("(0 restarts)"), "{status}");
    cluster.assert_output_equals_flink("q5", "q5");
}

#[test]
fn clear_errors_for_unknown_jobs_and_unreachable_coordinators() {
    let cluster = Cluster::start(1);
    let out = cluster.client(&["status", "job-404"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no job `job-404`"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let port = free_port();
    let out = wait_bounded(
        eddy()
            .args([
                "list",
                "--coordinators",
                &format!("127.0.0.1:{port}"),
                "--timeout",
                "1s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no coordinator leader answered"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

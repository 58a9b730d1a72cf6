//! The cluster as users and operators meet it: three `eddy coordinator` processes and two
//! `eddy worker` processes on loopback (ephemeral ports, temporary directories, real RocksDB),
//! driven with the `eddy` client commands. Jobs read the shared Nexmark input and their
//! committed output must equal Apache Flink's answer, also after a worker or the Raft leader is
//! killed with SIGKILL in the middle of a job.

mod common;

use common::{assert_committed_equals_flink, input, repo, wait_bounded};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn eddy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.env(
        "RUST_LOG",
        std::env::var("EDDY_TEST_LOG").unwrap_or("warn,openraft=error".into()),
    );
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
    /// Where each coordinator (by id - 1) and each worker serves Prometheus metrics.
    coordinator_metrics: Vec<String>,
    worker_metrics: Vec<String>,
    /// The admin token (`eddy token bootstrap`) every client command carries.
    token: Option<String>,
}

/// The body of an HTTP GET of `path` at `addr` (std only; bounded by timeouts).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of the first sample of `metric` whose labels contain every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Resident memory of a process, in bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
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
        Cluster::start_with(workers, &[])
    }

    /// A cluster whose workers get `env` (e.g. a fault file).
    fn start_with(workers: usize, env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut cluster = Cluster {
            dir,
            peers,
            coordinators: Vec::new(),
            workers: Vec::new(),
            coordinator_metrics: (0..3)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            worker_metrics: (0..workers)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            token: None,
        };
        // Mutual TLS, as a cluster runs by default: a CA and one certificate per node.
        let certs = eddy()
            .args(["certs", "init"])
            .arg(cluster.certs())
            .args(["--workers", &workers.to_string()])
            .output()
            .unwrap();
        assert!(
            certs.status.success(),
            "{}",
            String::from_utf8_lossy(&certs.stderr)
        );
        for id in 1..=3 {
            let child = cluster.spawn_coordinator(id);
            cluster.coordinators.push(Some(child));
        }
        // The first admin token, as an operator makes it (retried until a leader is elected).
        let started = Instant::now();
        loop {
            let out = cluster.client(&["token", "bootstrap"]);
            if out.status.success() {
                let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
                cluster.token = Some(token);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no admin token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Jobs read the shared input and write under the cluster's directory; a test may set
        // the workers' roots with EDDY_WORKER_ALLOW_PATHS in `env` instead.
        let narrowed = env.iter().any(|(k, _)| *k == "EDDY_WORKER_ALLOW_PATHS");
        let spawn_worker = |cluster: &Cluster, i: usize| {
            let roots = [cluster.dir.path(), input().parent().unwrap()];
            let allow = roots
                .into_iter()
                .filter(|_| !narrowed)
                .flat_map(|r| [std::ffi::OsStr::new("--allow-path"), r.as_os_str()]);
            eddy()
                .envs(env.iter().copied())
                .arg("worker")
                .args(["--coordinators", &cluster.peers.join(",")])
                .args(["--listen", "127.0.0.1:0", "--slots", "2"])
                .args(["--heartbeat", "200ms"])
                .args(["--metrics", &cluster.worker_metrics[i]])
                .arg("--tls-dir")
                .arg(cluster.certs().join(format!("worker-{}", i + 1)))
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("w{i}")))
                .args(allow)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        };
        for i in 0..workers {
            let child = spawn_worker(&cluster, i);
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
            // A worker whose metrics port another test took meanwhile (free_port only finds
            // one free at that moment) exits at once: start it again on another port.
            for i in 0..workers {
                let exited = cluster.workers[i]
                    .as_mut()
                    .is_some_and(|w| matches!(w.try_wait(), Ok(Some(_))));
                if exited {
                    cluster.worker_metrics[i] = format!("127.0.0.1:{}", free_port());
                    let child = spawn_worker(&cluster, i);
                    cluster.workers[i] = Some(child);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The cluster's certificates (`eddy certs init`).
    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
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
            .args(["--metrics", &self.coordinator_metrics[id - 1]])
            .arg("--tls-dir")
            .arg(self.certs().join(format!("coordinator-{id}")))
            // Jobs read the shared input and write under the cluster's directory.
            .arg("--allow-path")
            .arg(self.dir.path())
            .arg("--allow-path")
            .arg(input().parent().unwrap())
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("c{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Runs a client command against the coordinators (bounded).
    fn client(&self, args: &[&str]) -> Output {
        let child = eddy()
            .args(args)
            .env("EDDY_COORDINATORS", self.peers.join(","))
            .env("EDDY_TLS_DIR", self.certs().join("client"))
            .envs(self.token.iter().map(|t| ("EDDY_TOKEN", t)))
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
        // 12.5 s for the 100k events: a debug build on a loaded 2-core machine must still reach
        // a checkpoint, and then a savepoint or a kill, well before the end. (Alone, the first
        // checkpoint completes after about 0.5 s; with the whole suite running beside it, a
        // backpressured pipeline has taken 7 s, since barriers queue behind buffered records.)
        self.submit_with(query, out, &["--max-rate", "8000"])
    }

    fn submit_with(&self, query: &str, out: &str, extra: &[&str]) -> String {
        let job = repo().join(format!("jobs/nexmark/{query}.toml"));
        let output = format!("output={}/", self.dir.path().join(out).display());
        let ckpt = self.dir.path().join(format!("{out}-ckpt"));
        self.submit_job(&job, &output, &ckpt, extra)
    }

    /// Submits `job` over the shared input with one more parameter, checkpoints in `ckpt`
    /// every 100 ms at parallelism 2 (unless `extra` says otherwise); returns the job id.
    fn submit_job(&self, job: &Path, param: &str, ckpt: &Path, extra: &[&str]) -> String {
        let input = format!("input={}", input().display());
        let mut args = vec![
            "submit",
            job.to_str().unwrap(),
            "--param",
            &input,
            "--param",
            param,
        ];
        // Defaults, unless `extra` sets them.
        for (flag, value) in [
            ("--parallelism", "2"),
            ("--checkpoint-interval", "100ms"),
            ("--checkpoint-dir", ckpt.to_str().unwrap()),
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        self.submit_args(&args)
    }

    /// Runs `eddy <args>` (a submission), which must succeed; the job id it prints.
    fn submit_args(&self, args: &[&str]) -> String {
        let out = self.client(args);
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

    /// Waits until checkpoint >= `n` of `job` completed; fails if the job ends first.
    fn wait_checkpoint(&self, job: &str, n: u64) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let s = self.status(job);
            let job_line = s.lines().next().unwrap_or_default();
            assert!(
                !job_line.ends_with(": finished"),
                "finished before checkpoint {n}:\n{s}"
            );
            let last = s
                .lines()
                .find_map(|l| l.strip_prefix("last checkpoint: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if last >= n {
                return;
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
    // A finished job still shows what its tasks did.
    assert!(!status.contains("records in: 0,"), "{status}");
    assert!(status.contains(": finished, in "), "{status}");
    cluster.wait_finished(&q8);
    cluster.assert_output_equals_flink("q5", "q5");
    cluster.assert_output_equals_flink("q8", "q8");
}

/// The Nexmark benchmark's own Flink SQL, submitted as it is: `eddy submit` plans the script,
/// the cluster runs the job with checkpoints on two workers, and the part files under
/// `--sink-dir` equal Flink's answers.
#[test]
fn flink_sql_scripts_run_on_the_cluster_and_equal_flink() {
    let cluster = Cluster::start(2);
    let queries = repo().join("sql/tests/queries");
    let sink_dir = cluster.dir.path().join("sql-out");
    let input = format!("INPUT={}", input().display());
    let mut jobs = Vec::new();
    for q in ["q5", "q8"] {
        let ckpt = cluster.dir.path().join(format!("sql-{q}-ckpt"));
        let id = cluster.submit_args(&[
            "submit",
            queries.join("ddl.sql").to_str().unwrap(),
            queries.join(format!("{q}.sql")).to_str().unwrap(),
            "--param",
            &input,
            "--sink-dir",
            sink_dir.to_str().unwrap(),
            "--parallelism",
            "2",
            "--checkpoint-interval",
            "100ms",
            "--checkpoint-dir",
            ckpt.to_str().unwrap(),
        ]);
        jobs.push((q, id));
    }
    for (q, id) in &jobs {
        cluster.wait_finished(id);
        assert_committed_equals_flink(
            &sink_dir.join(format!("nexmark_{q}")),
            q,
            &cluster.dir.path().join(format!("sql-{q}.jsonl")),
        );
    }
}

#[test]
fn a_killed_worker_loses_nothing() {
    let mut cluster = Cluster::start(2);
    let job = cluster.submit_paced("q5", "q5");
    cluster.wait_checkpoint(&job, 1);
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
    cluster.wait_checkpoint(&job, 1);
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
    cluster.wait_checkpoint(&job, 1);
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

#[test]
fn every_node_serves_prometheus_metrics() {
    let cluster = Cluster::start(2);
    let job = cluster.submit_paced("q5", "q5");
    cluster.wait_checkpoint(&job, 2);
    let leader = cluster.leader();
    // Every coordinator: its Raft view, the same leader.
    for (i, addr) in cluster.coordinator_metrics.iter().enumerate() {
        let text = http_get(addr, "/metrics");
        let node = format!("node=\"{}\"", i + 1);
        assert!(
            sample(&text, "eddy_raft_term", &[&node]).unwrap() >= 1.0,
            "{text}"
        );
        assert!(sample(&text, "eddy_raft_commit_index", &[&node]).unwrap() >= 1.0);
        assert_eq!(
            sample(&text, "eddy_raft_leader", &[&node]),
            Some(leader as f64),
            "{text}"
        );
    }
    // The leader: slots and checkpoints.
    let text = http_get(&cluster.coordinator_metrics[leader - 1], "/metrics");
    let job_label = format!("job=\"{job}\"");
    assert_eq!(sample(&text, "eddy_slots_used", &[]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "eddy_slots_free", &[]), Some(2.0), "{text}");
    assert!(sample(&text, "eddy_checkpoint_size_bytes", &[&job_label]).unwrap() > 0.0);
    assert!(sample(&text, "eddy_last_checkpoint", &[&job_label]).unwrap() >= 2.0);
    assert!(
        sample(
            &text,
            "eddy_checkpoint_duration_seconds_count",
            &[&job_label]
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    // The workers: per operator subtask and per channel, summed over both.
    std::thread::sleep(Duration::from_millis(500)); // a heartbeat publishes task counters
    let workers: Vec<String> = cluster
        .worker_metrics
        .iter()
        .map(|a| http_get(a, "/metrics"))
        .collect();
    let total = |metric: &str, labels: &[&str]| -> f64 {
        workers
            .iter()
            .flat_map(|text| {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{metric}{{")))
                    .filter(|l| labels.iter().all(|label| l.contains(label)))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    let source = [job_label.as_str(), "operator=\"events\""];
    assert!(
        total("eddy_records_out_total", &source) > 0.0,
        "{workers:?}"
    );
    assert!(total("eddy_records_in_total", &[&job_label]) > 0.0);
    assert!(total("eddy_busy_seconds", &[&job_label]) > 0.0);
    for metric in ["eddy_backpressured_seconds", "eddy_exchange_credits"] {
        assert!(
            workers.iter().any(|t| t.contains(&format!("{metric}{{"))),
            "{metric} missing"
        );
    }
    // Two workers at parallelism 2: some channels cross between them.
    let sent = total("eddy_exchange_sent_bytes_total", &[&job_label]);
    let received = total("eddy_exchange_received_bytes_total", &[&job_label]);
    assert!(
        sent > 0.0 && received > 0.0,
        "sent {sent}, received {received}"
    );
}

#[test]
fn a_slow_sink_holds_back_the_sources_over_grpc_and_memory_stays_flat() {
    let cluster = Cluster::start(2);
    // Two source subtasks (one per worker) feed one sink subtask: one stream crosses workers.
    let job_file = cluster.dir.path().join("slow-sink.toml");
    std::fs::write(
        &job_file,
        r#"name = "slow-sink"
parallelism = 2

[params]
input = { description = "events" }
output = { description = "where bids go" }

[[source]]
name = "events"
connector = "file"
format = "nexmark"
path = "${input}"

[[operator]]
name = "bids"
type = "select"
input = "events.bid"
columns = ["auction", "bidder", "price", "dateTime", "extra"]

[[sink]]
name = "out"
input = "bids"
parallelism = 1
connector = "file"
path = "${output}"
"#,
    )
    .unwrap();
    // The sink writes into a pipe this test reads slowly: a deliberately slow consumer.
    let fifo = cluster.dir.path().join("bids.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (fifo, read) = (fifo.clone(), read.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let Ok(mut pipe) = std::fs::File::open(&fifo) else {
                return;
            };
            let mut buffer = vec![0u8; 16 * 1024];
            let started = Instant::now();
            // About 1.6 MB/s for at most 60 s; the end of the cluster closes the pipe.
            while started.elapsed() < Duration::from_secs(60) {
                match pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let lines = buffer[..n].iter().filter(|b| **b == b'\n').count();
                        read.fetch_add(lines as u64, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let output = format!("output={}", fifo.display());
    let out = cluster.client(&[
        "submit",
        job_file.to_str().unwrap(),
        "--generate",
        "1000000000",
        "--param",
        &output,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pids: Vec<u32> = cluster.workers.iter().flatten().map(|c| c.id()).collect();
    // Bids that left the select but were not read yet: in buffers and channels.
    let in_flight = || -> i64 {
        let status = cluster.status(&job);
        let emitted: i64 = status
            .lines()
            .filter(|l| l.trim_start().starts_with("bids["))
            .filter_map(|l| l.rsplit("out ").next()?.trim().parse::<i64>().ok())
            .sum();
        emitted - read.load(std::sync::atomic::Ordering::SeqCst) as i64
    };
    std::thread::sleep(Duration::from_secs(3));
    let early: u64 = pids.iter().map(|p| rss(*p)).sum();
    let mut worst = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        worst = worst.max(in_flight());
    }
    let late: u64 = pids.iter().map(|p| rss(*p)).sum();
    let lines = read.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "in flight at most {worst}, read {lines}, rss {} -> {} MiB",
        early >> 20,
        late >> 20
    );
    assert!(lines > 0, "the sink wrote nothing");
    // Channels hold a few dozen batches of 1024 rows at most; without backpressure the
    // generator (millions of events per second) would be far ahead of a 1.6 MB/s reader.
    assert!(worst < 150_000, "{worst} bids in flight ({lines} read)");
    assert!(
        late < early + (64 << 20),
        "worker memory grew from {} MiB to {} MiB",
        early >> 20,
        late >> 20
    );
    // The stream between the workers waited for credits: backpressure crossed gRPC.
    let waits: f64 = cluster
        .worker_metrics
        .iter()
        .filter_map(|a| {
            sample(
                &http_get(a, "/metrics"),
                "eddy_exchange_credit_waits_total",
                &[&format!("job=\"{job}\"")],
            )
        })
        .sum();
    assert!(waits > 0.0, "no sender ever waited for a credit");
    let cancelled = cluster.client(&["cancel", &job]);
    assert!(cancelled.status.success());
    drop(cluster);
    // Should the sink never have opened the pipe, the reader still waits in `open`: a writer
    // that comes and goes releases it (non-blocking, so it never waits itself).
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000; // Linux
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo);
    }
    reader.join().unwrap();
}

#[test]
fn a_stopped_job_resumes_from_its_savepoint() {
    let cluster = Cluster::start(2);
    let job = cluster.submit_paced("q8", "q8");
    cluster.wait_checkpoint(&job, 1);
    let savepoints = cluster.dir.path().join("sp");
    let out = cluster.client(&[
        "savepoint",
        &job,
        "--dir",
        savepoints.to_str().unwrap(),
        "--stop",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("savepoint "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `status --wait` ends at the cancellation (exit code 1: the job did not finish).
    let out = cluster.client(&["status", &job, "--wait", "--wait-timeout", "30s"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.lines().next().unwrap().contains(": cancelled"),
        "{status}"
    );
    // A savepoint of another job is refused at submission, naming both jobs.
    let out = cluster.client(&[
        "submit",
        repo().join("jobs/nexmark/q5.toml").to_str().unwrap(),
        "--param",
        &format!("input={}", input().display()),
        "--param",
        &format!("output={}/elsewhere/", cluster.dir.path().display()),
        "--checkpoint-interval",
        "100ms",
        "--from-savepoint",
        savepoints.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("belongs to job `nexmark-q8`"),
        "{stderr}"
    );
    // The same job, resubmitted from the savepoint at another parallelism, continues into the
    // same output: the whole committed output is Flink's answer, nothing lost or twice.
    let resumed = cluster.submit_with(
        "q8",
        "q8",
        &[
            "--parallelism",
            "1",
            "--checkpoint-dir",
            cluster.dir.path().join("resumed-ckpt").to_str().unwrap(),
            "--from-savepoint",
            savepoints.to_str().unwrap(),
        ],
    );
    let status = cluster.wait_finished(&resumed);
    assert!(status.contains("parallelism 1"), "{status}");
    cluster.assert_output_equals_flink("q8", "q8");
}

#[test]
fn a_killed_worker_writes_nothing_twice_into_postgres() {
    let server = eddy_postgres::testing::PgServer::start().unwrap();
    server
        .client()
        .batch_execute("CREATE TABLE q8 (id bigint, name text, stime timestamp(3))")
        .unwrap();
    let mut cluster = Cluster::start(2);
    let job = common::q8_into_postgres(cluster.dir.path());
    let id = cluster.submit_job(
        &job,
        &format!("pg={}", server.url()),
        &cluster.dir.path().join("pg-ckpt"),
        &["--max-rate", "12500"],
    );
    cluster.wait_checkpoint(&id, 1);
    let mut victim = cluster.workers[0].take().unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let status = cluster.wait_finished(&id);
    assert!(!status.contains("(0 restarts)"), "{status}");
    let actual = cluster.dir.path().join("q8-table.jsonl");
    common::dump_q8_table(&server, &actual);
    if let Err(diff) = eddy_jobs::compare::compare_files(&common::expected("q8"), &actual) {
        panic!("the q8 table differs from Flink's answer: {diff}");
    }
}

#[test]
fn the_shop_on_two_workers_survives_a_killed_worker_and_equals_the_ground_truth() {
    use common::shop::{compare_with_truth, generate, warehouse, Serve};
    let pg = eddy_postgres::testing::PgServer::start().unwrap();
    let broker = eddy_kafka::testing::Broker::start().unwrap();
    let url = warehouse(&pg, "shop");
    let serve = Serve::start(&["--kafka", &broker.address(), "--partitions", "2"]);
    let mut cluster = Cluster::start(2);
    let job = repo().join("jobs/ecommerce/analytics.toml");
    let ckpt = cluster.dir.path().join("shop-ckpt");
    let id = cluster.submit_args(&[
        "submit",
        job.to_str().unwrap(),
        "--param",
        &format!("brokers={}", broker.address()),
        "--param",
        &format!("warehouse={url}"),
        "--param",
        // The load runs beside the job: a loaded machine can stall the generator for seconds,
        // and a job that took that for the end of its input would miss the rest.
        "end_when_idle=10s",
        "--parallelism",
        "2",
        "--checkpoint-interval",
        "300ms",
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
    ]);
    let (http, dir, key) = (
        serve.url.clone(),
        cluster.dir.path().to_path_buf(),
        serve.key.clone(),
    );
    let load = std::thread::spawn(move || generate(&http, &dir, &["--fast", "--api-key", &key]));
    cluster.wait_checkpoint(&id, 1);
    let mut victim = cluster.workers[1].take().unwrap();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let expected = load.join().unwrap();
    let started = Instant::now();
    let status = loop {
        let s = cluster.status(&id);
        let state = s.lines().next().unwrap_or_default().to_string();
        if state.ends_with(": finished") {
            break s;
        }
        assert!(
            !state.contains(": failed") && started.elapsed() < Duration::from_secs(240),
            "{id} did not finish: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(!status.contains("(0 restarts)"), "{status}");
    let problems = compare_with_truth(&url, &expected);
    assert!(
        problems.is_empty(),
        "the warehouse differs from the ground truth:\n{}",
        problems.join("\n")
    );
}

/// The last checkpoint `eddy status` shows.
fn last_checkpoint(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("last checkpoint: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_new_leader_adopts_the_running_job_instead_of_restarting_it() {
    let mut cluster = Cluster::start(2);
    let job = cluster.submit_paced("q5", "q5");
    cluster.wait_checkpoint(&job, 1);
    let old = cluster.leader();
    let mut victim = cluster.coordinators[old - 1].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Checkpoints go on under the new leader, in the same attempt.
    let before = last_checkpoint(&cluster.status(&job));
    cluster.wait_checkpoint(&job, before + 2);
    let status = cluster.wait_finished(&job);
    assert!(status.contains("(0 restarts)"), "{status}");
    cluster.assert_output_equals_flink("q5", "q5");
}

#[test]
fn a_commit_that_fails_is_retried_and_nothing_is_lost() {
    // Commits of the workers' sinks fail for 2 s right after a checkpoint: the leader retries
    // them (before the fix it ignored the failure, and the next checkpoint's commit published
    // only its own files: the rows of the failed one were lost).
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults");
    let faults_env = faults.display().to_string();
    let cluster = Cluster::start_with(2, &[("EDDY_FAULTS_FILE", faults_env.as_str())]);
    let job = cluster.submit_paced("q8", "q8");
    cluster.wait_checkpoint(&job, 1);
    std::fs::write(&faults, "io_error=commit\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&faults, "").unwrap();
    let status = cluster.wait_finished(&job);
    assert!(status.contains("(0 restarts)"), "{status}");
    cluster.assert_output_equals_flink("q8", "q8");
}

#[test]
fn cancels_racing_starts_leave_nothing_running_or_writing() {
    let cluster = Cluster::start(2);
    let mut jobs = Vec::new();
    for i in 0..12 {
        let out = format!("race-{i}");
        let job = cluster.submit_with("q5", &out, &["--max-rate", "4000"]);
        // Cancel at once (before placement), or a little later (during deployment or run).
        if i % 3 != 0 {
            std::thread::sleep(Duration::from_millis(50 * (i % 4)));
        }
        let cancelled = cluster.client(&["cancel", &job]);
        assert!(
            cancelled.status.success(),
            "{}",
            String::from_utf8_lossy(&cancelled.stderr)
        );
        jobs.push((job, out));
    }
    let committed = |out: &str| -> Vec<String> {
        std::fs::read_dir(cluster.dir.path().join(out))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    let at_cancel: Vec<Vec<String>> = jobs.iter().map(|(_, out)| committed(out)).collect();
    std::thread::sleep(Duration::from_secs(3));
    for ((job, out), before) in jobs.iter().zip(at_cancel) {
        let status = cluster.status(job);
        assert!(
            status.lines().next().unwrap().contains(": cancelled"),
            "{status}"
        );
        assert_eq!(
            committed(out),
            before,
            "{job} wrote after its cancel returned"
        );
    }
    // Every slot is free again.
    let workers = cluster.client(&["workers"]);
    let text = String::from_utf8_lossy(&workers.stdout);
    assert!(text.lines().all(|l| l.contains("slots 0/2 used")), "{text}");
}

#[test]
fn a_postgres_restart_mid_job_does_not_fail_the_job() {
    let mut server = eddy_postgres::testing::PgServer::start().unwrap();
    server
        .client()
        .batch_execute("CREATE TABLE q8 (id bigint, name text, stime timestamp(3))")
        .unwrap();
    let cluster = Cluster::start(2);
    let job = common::q8_into_postgres(cluster.dir.path());
    let id = cluster.submit_job(
        &job,
        &format!("pg={}", server.url()),
        &cluster.dir.path().join("pg-ckpt"),
        &["--max-rate", "8000"],
    );
    cluster.wait_checkpoint(&id, 1);
    // Down for 3 s: sinks cannot stage or commit; the job restarts with backoff and goes on
    // (before the fix: six restarts 100 ms apart, then failed for good).
    server.crash();
    std::thread::sleep(Duration::from_secs(3));
    server.start_again().unwrap();
    let status = cluster.wait_finished(&id);
    assert!(status.contains(": finished"), "{status}");
    let actual = cluster.dir.path().join("q8-table.jsonl");
    common::dump_q8_table(&server, &actual);
    if let Err(diff) = eddy_jobs::compare::compare_files(&common::expected("q8"), &actual) {
        panic!("the q8 table differs from Flink's answer: {diff}");
    }
}

#[test]
fn a_worker_refuses_a_deployment_outside_its_allowed_paths() {
    // The coordinators allow the cluster's directory; the worker only the input's.
    let inputs = input().parent().unwrap().display().to_string();
    let cluster = Cluster::start_with(1, &[("EDDY_WORKER_ALLOW_PATHS", &inputs)]);
    let job = cluster.submit("q5", "q5");
    let started = Instant::now();
    loop {
        let out = cluster.client(&["status", &job]);
        let status = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if status.contains("outside the allowed paths") {
            assert!(status.contains("on worker"), "{status}");
            assert!(status.contains("the output of sink"), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the deployment was not refused: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !cluster.dir.path().join("q5").exists(),
        "the refused job wrote its output"
    );
}

#[test]
fn two_live_jobs_cannot_share_a_checkpoint_or_output_directory() {
    let cluster = Cluster::start(1);
    let job = cluster.submit_paced("q5", "shared");
    let ckpt = cluster.dir.path().join("shared-ckpt");
    let input = format!("input={}", input().display());
    let output = format!("output={}/", cluster.dir.path().join("shared").display());
    let other_output = format!("output={}/", cluster.dir.path().join("other").display());
    let q5 = repo().join("jobs/nexmark/q5.toml");
    for (out, ckpt_dir, expect) in [
        (
            &other_output,
            ckpt.to_str().unwrap(),
            "checkpoint directory",
        ),
        (
            &output,
            cluster.dir.path().join("c2").to_str().unwrap(),
            "output directory",
        ),
    ] {
        let refused = cluster.client(&[
            "submit",
            q5.to_str().unwrap(),
            "--param",
            &input,
            "--param",
            out,
            "--checkpoint-interval",
            "100ms",
            "--checkpoint-dir",
            ckpt_dir,
        ]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains(expect) && stderr.contains(&job), "{stderr}");
    }
}

#[test]
fn a_deposed_leader_turns_away_acknowledgements_of_a_newer_term() {
    // A leader paused or cut off is deposed without knowing it for a while; acknowledgements
    // of checkpoints its successor triggered must go on to the successor, not be swallowed
    // (they were, and checkpoints stalled for their whole 30 s timeout: the chaos harness).
    use eddy_proto::v1::coordinator_control_client::CoordinatorControlClient;
    use eddy_proto::v1::CheckpointAck;
    let cluster = Cluster::start(0);
    let leader = cluster.leader();
    let addr = cluster.peers[leader - 1].clone();
    // Acknowledgements come from workers: this test speaks as one.
    let spec =
        eddy_security::certs::NodeSpec::named("worker-test", vec![], vec![], vec![]).unwrap();
    let dir = eddy_security::certs::issue(&cluster.certs(), &spec).unwrap();
    eddy_proto::net::use_tls(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = eddy_proto::net::channel(&addr, Duration::from_secs(5)).unwrap();
        let mut client = CoordinatorControlClient::new(channel);
        let ack = |term| CheckpointAck {
            job_id: "job-none".into(),
            attempt: 1,
            checkpoint: 1,
            task: 0,
            finished: false,
            subtasks_json: b"[]".to_vec(),
            term,
        };
        let refused = client
            .acknowledge_checkpoint(ack(u64::MAX))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains("not the leader"), "{refused:?}");
        // Of its own term (1 is never newer), it is taken.
        client.acknowledge_checkpoint(ack(1)).await.unwrap();
    });
}

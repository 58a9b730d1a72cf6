//! The short seeded chaos run of the test suite: `eddy chaos` starts three coordinators and
//! three workers as processes on loopback, runs Nexmark q5 with checkpoints at a paced rate and
//! injects 30 faults of every kind the job scenario has (processes killed and paused, nodes
//! partitioned, links dropped one way, delayed and reset, disks full as root, I/O errors, slow
//! syncs), then checks the committed output against Flink's answer, cancelled jobs, checkpoint
//! ids, Raft terms and every recovery time; then the e-commerce scenario (Kafka, PostgreSQL
//! and the shop's analytics job against the generator's ground truth) with the dependency
//! restarts among its faults. The long run is `eddy chaos --faults 1000` (docs/reliability.md).

mod common;

use common::{repo, wait_bounded};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `eddy chaos` with `args` (bounded) and returns its report, after checking that it
/// passed.
fn chaos(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(repo())
        .arg("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path().join("run"))
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(420));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    report
}

#[test]
fn thirty_seeded_faults_lose_and_duplicate_nothing() {
    let report = chaos(&[
        "--faults",
        "30",
        "--seed",
        "17",
        "--max-fault-duration",
        "3s",
        "--max-rate",
        "1500",
    ]);
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 30);
    // Every kind the scenario can inject was injected.
    let kinds: std::collections::BTreeSet<&str> =
        faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    let skipped = report["skipped"].as_array().unwrap().len();
    assert_eq!(kinds.len() + skipped, 16, "{kinds:?}");
    for round in report["rounds"].as_array().unwrap() {
        assert_eq!(round["missing"], 0, "{round}");
        assert_eq!(round["duplicated"], 0, "{round}");
        assert_eq!(round["state"], "finished", "{round}");
    }
}

#[test]
fn the_shop_survives_postgres_and_kafka_restarts_among_other_faults() {
    let kinds =
        "restart-postgres,restart-kafka,kill-worker,partition-node,pause-coordinator,io-errors";
    let report = chaos(&[
        "--scenario",
        "ecommerce",
        "--faults",
        "8",
        "--seed",
        "5",
        "--kinds",
        kinds,
        "--max-fault-duration",
        "3s",
        "--max-rate",
        "1500",
        // Events an hour late, kept by a cluster after some restores where an uninterrupted
        // run drops them, are an open finding (docs/reliability.md); late rows after a
        // restore are checked in cli/tests/recovery.rs.
        "--late-share",
        "0",
    ]);
    let injected: std::collections::BTreeSet<&str> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(injected.len(), 6, "{injected:?}");
    for round in report["rounds"].as_array().unwrap() {
        assert_eq!(round["state"], "finished", "{round}");
        assert_eq!(round["missing"], 0, "{round}");
        assert!(round["problems"].as_array().unwrap().is_empty(), "{round}");
    }
}

/// Runs `eddy` with `args` against the coordinators of `cluster` as its admin (bounded) and
/// returns its stdout.
fn client(cluster: &eddy_chaos::cluster::Cluster, args: &[&str]) -> String {
    let tls = cluster.client_tls_dir();
    let out = common::cluster_cli(cluster, Some(&tls), Some(cluster.token()), args);
    assert!(
        out.status.success(),
        "eddy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `prefix` on a line of `text`.
fn field<T: std::str::FromStr>(text: &str, prefix: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_trigger_lost_on_its_way_is_sent_again() {
    // The chaos harness found checkpoints stalled for their whole 30 s timeout after a trigger
    // did not reach a worker (the leader paused, a link dropped it): the leader now sends it
    // again until it arrives. Here every byte the leader sends to the worker is dropped for
    // longer than a trigger call may take, then the link heals: the checkpoint triggered
    // meanwhile must complete, not time out.
    use eddy_chaos::cluster::{scrape, Node};
    let dir = tempfile::tempdir().unwrap();
    let (runtime, cluster) = common::proxied_cluster(dir.path(), 1, "warn");
    runtime.block_on(async {
        let input = format!("input={}", common::input().display());
        let output = format!("output={}/", dir.path().join("out").display());
        let ckpt = dir.path().join("ckpt");
        let job = client(
            &cluster,
            &[
                "submit",
                repo().join("jobs/nexmark/q5.toml").to_str().unwrap(),
                "--param",
                &input,
                "--param",
                &output,
                "--parallelism",
                "1",
                "--checkpoint-interval",
                "300ms",
                "--checkpoint-dir",
                ckpt.to_str().unwrap(),
                // 50 s for the 100k events: the job runs through the whole test.
                "--max-rate",
                "2000",
            ],
        )
        .trim()
        .to_string();
        let last_checkpoint =
            || field::<u64>(&client(&cluster, &["status", &job]), "last checkpoint: ").unwrap_or(0);
        let wait_for = |n: u64| {
            let started = Instant::now();
            loop {
                let last = last_checkpoint();
                if last >= n {
                    return last;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "checkpoint {n} did not complete (last {last})"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let before = wait_for(1);
        let leader: u64 = field(&client(&cluster, &["list"]), "leader: ").unwrap();
        let (from, to) = (Node::Coordinator(leader), Node::Worker(0));
        // Requests on the leader's connections to the worker are held, then dropped with
        // their connections: longer than the 5 s a trigger call may take.
        cluster
            .link(from, to)
            .unwrap()
            .update(|s| s.hold_forward = true);
        tokio::time::sleep(Duration::from_secs(6)).await;
        cluster.link(from, to).unwrap().update(|s| s.resets += 1);
        cluster.link(from, to).unwrap().heal();
        // Two more checkpoints: the one triggered during the drop, and the next.
        wait_for(before + 2);
        let metrics = scrape(&cluster.metrics[&leader], Duration::from_secs(5))
            .await
            .unwrap();
        let abandoned: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("eddy_checkpoints_abandoned_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(abandoned, 0.0, "{metrics}");
        client(&cluster, &["cancel", &job]);
    });
}

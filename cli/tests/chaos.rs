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
use std::time::Duration;

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

//! The e-commerce analytics end to end, against real servers: generated traffic (with malformed
//! and late events and a revenue drop) goes through the ingest API of `eddy serve` into a real
//! Kafka broker (tansu); `eddy run` of jobs/ecommerce/analytics.toml reads it and fills the
//! star-schema warehouse in a real PostgreSQL, and is killed with SIGKILL three times while the
//! load runs. Afterwards every KPI, alert, late count, fact count and sum equals the generator's
//! ground truth, and reprocessing the same events from files into a fresh warehouse fills every
//! table with the same rows.

mod common;

use common::shop::{compare_warehouses, compare_with_truth, eddy, generate, warehouse, Serve};
use eddy_kafka::testing::Broker;
use eddy_postgres::testing::PgServer;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
                .count()
        })
        .unwrap_or(0)
}

fn analytics() -> std::path::PathBuf {
    common::repo().join("jobs/ecommerce/analytics.toml")
}

#[test]
fn a_shop_through_kafka_survives_kill_9_and_equals_the_ground_truth_and_a_replay() {
    let pg = PgServer::start().unwrap();
    let broker = Broker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = warehouse(&pg, "live");
    let serve = Serve::start(&["--kafka", &broker.address(), "--partitions", "3"]);

    // The load: the generator posts to the ingest API as fast as it takes it.
    let (expected_tx, expected_rx) = std::sync::mpsc::channel();
    let (url, gen_dir, key) = (
        serve.url.clone(),
        dir.path().to_path_buf(),
        serve.key.clone(),
    );
    let load = std::thread::spawn(move || {
        let expected = generate(&url, &gen_dir, &["--fast", "--api-key", &key]);
        let _ = expected_tx.send(expected);
    });

    let checkpoint_dir = dir.path().join("ckpt");
    let run = |end_when_idle: &str| -> Child {
        eddy()
            .current_dir(dir.path())
            .arg("run")
            .arg(analytics())
            .args(["--param", &format!("brokers={}", broker.address())])
            .args(["--param", &format!("warehouse={live}")])
            .args(["--param", &format!("end_when_idle={end_when_idle}")])
            .args(["--parallelism", "2", "--checkpoint-interval", "300ms"])
            .arg("--checkpoint-dir")
            .arg(&checkpoint_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Three runs killed with SIGKILL, each after it completed a checkpoint of its own.
    for kill in 0..3 {
        let before = checkpoints(&checkpoint_dir);
        let mut child = run("never");
        let started = Instant::now();
        while checkpoints(&checkpoint_dir) == before && started.elapsed() < Duration::from_secs(60)
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "run {kill} ended early"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150 * kill));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    load.join().unwrap();
    let expected = expected_rx.recv().unwrap();
    // The last run reads what is left and ends once every topic stays quiet.
    let out = common::wait_bounded(run("3s"), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "the last run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = postgres::Client::connect(&live, postgres::NoTls).unwrap();
    let runs: i64 = client
        .query_one(
            "SELECT count(DISTINCT run) FROM eddy_sink_commits WHERE sink LIKE '%/fact_clicks'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        runs >= 2,
        "commits came from {runs} run(s); the kills missed"
    );
    let problems = compare_with_truth(&live, &expected);
    assert!(
        problems.is_empty(),
        "the warehouse differs from the ground truth:\n{}",
        problems.join("\n")
    );
    let alerts: i64 = client
        .query_one(
            "SELECT count(*) FROM alerts WHERE metric = 'revenue_usd'
             AND window_start = '2026-01-01 00:10:00'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(alerts, 1, "the injected revenue drop is detected");

    // Reprocessing: the same events from files, as one bounded run, into a fresh warehouse.
    let history = dir.path().join("history");
    let replayed = generate(&format!("file:{}", history.display()), dir.path(), &[]);
    assert_eq!(replayed, expected, "the generator is reproducible");
    let batch = warehouse(&pg, "replay");
    let out = eddy()
        .current_dir(dir.path())
        .arg("run")
        .arg(analytics())
        .arg("--topics-from")
        .arg(&history)
        .args(["--param", &format!("warehouse={batch}")])
        .args(["--parallelism", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let problems = compare_warehouses(&live, &batch);
    assert!(
        problems.is_empty(),
        "the replay differs from the streaming run:\n{}",
        problems.join("\n")
    );
    drop(serve);
}

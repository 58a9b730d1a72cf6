//! Exactly-once output into a real PostgreSQL server: `eddy run` writes Nexmark q8 into a table
//! through the `postgres` sink, is killed with SIGKILL several times at random moments, and the
//! table then holds exactly Flink's answer: no row lost, none twice.

mod common;

use common::{dump_q8_table, expected, input, q8_into_postgres, wait_bounded};
use eddy_jobs::compare::compare_files;
use eddy_postgres::testing::PgServer;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("ckpt"))
        .map(|e| {
            e.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn q8_into_postgres_survives_kill_9_exactly_once() {
    let server = PgServer::start().unwrap();
    server
        .client()
        .batch_execute("CREATE TABLE q8 (id bigint, name text, stime timestamp(3))")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = q8_into_postgres(dir.path());
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
        cmd.current_dir(dir.path())
            .arg("run")
            .arg(&job)
            .arg("--param")
            .arg(format!("input={}", input().display()))
            .arg("--param")
            .arg(format!("pg={}", server.url()))
            .args(["--parallelism", "2", "--checkpoint-dir", "ckpt/"])
            .args(["--checkpoint-interval", "100ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let mut kills = 0;
    let mut seed: u64 = 0x5eed_0908;
    while kills < 3 {
        assert!(checkpoints(dir.path()) < 1000);
        let before = checkpoints(dir.path());
        // 100k events in 2 s: the kill lands while the job runs.
        let mut child = run(&["--max-rate", "50000"]).spawn().unwrap();
        let started = Instant::now();
        while checkpoints(dir.path()) == before
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 300));
        let running = child.try_wait().unwrap().is_none();
        if running {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            running,
            "run {} finished before its kill: {}",
            kills + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = wait_bounded(run(&[]).spawn().unwrap(), Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let actual = dir.path().join("q8-table.jsonl");
    dump_q8_table(&server, &actual);
    if let Err(diff) = compare_files(&expected("q8"), &actual) {
        panic!("the q8 table differs from Flink's answer: {diff}");
    }
    // Rows reached the table through several runs' commits: the killed runs' and the last.
    let runs: i64 = server
        .client()
        .query_one(
            "SELECT count(DISTINCT run) FROM eddy_sink_commits WHERE epoch > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(runs > 2, "only {runs} runs committed");
}

#[test]
fn an_unreachable_server_or_missing_table_is_a_clear_error() {
    let server = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = q8_into_postgres(dir.path());
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .current_dir(dir.path())
            .arg("run")
            .arg(&job)
            .arg("--param")
            .arg(format!("input={}", input().display()))
            .arg("--param")
            .arg(format!("pg={url}"))
            .output()
            .unwrap()
    };
    let out = run(&server.url());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("table `q8` does not exist"), "{stderr}");
    let out = run("postgresql://eddy:hunter2@127.0.0.1:1/postgres");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to PostgreSQL at"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

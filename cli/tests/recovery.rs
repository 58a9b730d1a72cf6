//! Exactly-once recovery, as a user meets it: `eddy run` with checkpoints is killed with SIGKILL
//! at random moments and run again until it finishes; the committed output (the regular files of
//! the output directory whose names do not start with '.' or '_') must then equal Apache Flink's
//! answer: nothing lost, nothing twice. Real processes, real RocksDB in temporary directories.

mod common;

use common::{assert_committed_equals_flink, input, repo, wait_bounded};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A deterministic pseudo-random sequence (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One job run against a work directory: output in `out/`, checkpoints in `ckpt/`.
struct Run<'a> {
    dir: &'a Path,
    query: &'a str,
    /// Read the Nexmark generator (the same 100k events) instead of the input file.
    generate: bool,
}

impl Run<'_> {
    fn command(&self, parallelism: u32, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
        cmd.current_dir(self.dir)
            .arg("run")
            .arg(repo().join(format!("jobs/nexmark/{}.toml", self.query)));
        if self.generate {
            cmd.args(["--generate", "100000"]);
        } else {
            cmd.arg("--param")
                .arg(format!("input={}", input().display()));
        }
        cmd.args(["--param", "output=out/", "--checkpoint-dir", "ckpt/"])
            .args(["--checkpoint-interval", "30ms"])
            .arg("--parallelism")
            .arg(parallelism.to_string())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, parallelism: u32) -> Child {
        self.command(parallelism, &[]).spawn().expect("start eddy")
    }

    /// Runs to the end (bounded), returning stderr.
    fn finish(&self, parallelism: u32) -> String {
        let child = self.spawn(parallelism);
        let out = wait_bounded(child, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "eddy failed: {stderr}");
        stderr
    }

    /// The id of the newest completed checkpoint in `ckpt/` (0: none).
    fn checkpoints_made(&self) -> u64 {
        std::fs::read_dir(self.dir.join("ckpt"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("_metadata").exists())
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("chk-")
                            .and_then(|n| n.parse().ok())
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Starts a run, waits until `ckpt/` holds `n` completed checkpoints and kills it with
    /// SIGKILL. False if the run ended by itself first.
    fn kill_after_checkpoints(&self, parallelism: u32, extra: &[&str], n: usize) -> bool {
        let mut child = self
            .command(parallelism, extra)
            .spawn()
            .expect("start eddy");
        let started = Instant::now();
        while self.checkpoints() < n && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(2));
        }
        let killed = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        killed
    }

    /// Forgets every earlier run: no output, no checkpoints.
    fn start_over(&self) {
        std::fs::remove_dir_all(self.dir.join("out")).ok();
        std::fs::remove_dir_all(self.dir.join("ckpt")).ok();
    }

    /// Completed checkpoints in `ckpt/`.
    fn checkpoints(&self) -> usize {
        std::fs::read_dir(self.dir.join("ckpt"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("_metadata").exists())
                    .count()
            })
            .unwrap_or(0)
    }

    /// Compares the committed files of `out/` with Flink's answer.
    fn assert_output_equals_flink(&self) {
        assert_committed_equals_flink(
            &self.dir.join("out"),
            self.query,
            &self.dir.join("committed.jsonl"),
        );
    }
}

/// Kills the job at random moments at least `kills` times (restarting it each time), then lets
/// it finish, and compares the committed output with Flink's.
fn survives_kills(query: &str, parallelism: u32, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query,
        generate: false,
    };
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut resumed = 0;
    let mut attempts = 0;
    // Until it was killed 5 times and at least one run resumed from a checkpoint: a fast machine
    // may finish a 100k-event run between its first checkpoint and the kill.
    while kills < 5 || resumed == 0 {
        attempts += 1;
        assert!(
            attempts < 60,
            "the job kept finishing before it could be killed ({kills} kills, {resumed} resumed)"
        );
        let before = run.checkpoints_made();
        // Paced (100k rows in at least a second), so most kills land while the job runs.
        let mut child = run
            .command(parallelism, &["--max-rate", "100000"])
            .spawn()
            .expect("start eddy");
        // Mostly a random moment after this run completed a checkpoint of its own (so every
        // run makes progress), sometimes a random moment early in the run.
        if rng.below(4) > 0 {
            let started = Instant::now();
            while run.checkpoints_made() == before
                && child.try_wait().unwrap().is_none()
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.below(120)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(killed || out.status.success(), "eddy failed: {stderr}");
        if stderr.contains("resuming from checkpoint") {
            resumed += 1;
        }
        if out.status.success() {
            // It finished before the kill: start over with fresh directories.
            run.start_over();
        }
    }
    if run.finish(parallelism).contains("resuming from checkpoint") {
        resumed += 1;
    }
    assert!(resumed > 0, "no run resumed from a checkpoint");
    run.assert_output_equals_flink();
}

#[test]
fn q5_survives_kill_9() {
    survives_kills("q5", 1, 0x5eed_0005);
}

#[test]
fn q7_survives_kill_9_at_parallelism_2() {
    survives_kills("q7", 2, 0x5eed_0007);
}

#[test]
fn q9_survives_kill_9() {
    // Its updating result keeps a materialised table larger than what a checkpoint's metadata
    // holds inline: the sink's state is stored apart and read back for the commit.
    survives_kills("q9", 1, 0x5eed_0009);
}

#[test]
fn q8_survives_kill_9() {
    survives_kills("q8", 1, 0x5eed_0008);
}

#[test]
fn q8_survives_kill_9_at_parallelism_2() {
    survives_kills("q8", 2, 0x5eed_0028);
}

/// Runs at `from` parallelism until a few checkpoints completed, kills it, finishes at `to`.
fn rescales(query: &str, from: u32, to: u32) {
    rescales_reading(query, from, to, false)
}

fn rescales_reading(query: &str, from: u32, to: u32, generate: bool) {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query,
        generate,
    };
    for _ in 0..5 {
        // Paced (100k rows in about 2 s), so the kill lands while the job runs on any machine.
        if !run.kill_after_checkpoints(from, &["--max-rate", "50000"], 2) {
            run.start_over();
            continue;
        }
        let stderr = run.finish(to);
        if stderr.contains("already finished") {
            // The kill landed after the final checkpoint: nothing was left to restore.
            run.start_over();
            continue;
        }
        assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
        run.assert_output_equals_flink();
        return;
    }
    panic!("the job finished before it could be killed, five times");
}

#[test]
fn q5_restores_from_parallelism_1_at_2() {
    rescales("q5", 1, 2);
}

#[test]
fn q8_restores_from_parallelism_2_at_1() {
    rescales("q8", 2, 1);
}

#[test]
fn q5_on_the_generator_restores_from_parallelism_2_at_3() {
    // Generator positions differ per split after a rescale; every event must still be made once.
    rescales_reading("q5", 2, 3, true);
}

#[test]
fn q4_updating_result_restores_from_parallelism_1_at_2() {
    // An updating sink keeps its materialised table in its snapshot; a rescale must hand each
    // row to the subtask its retractions will reach.
    rescales("q4", 1, 2);
}

#[test]
fn a_crash_while_writing_a_checkpoint_restores_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q5",
        generate: false,
    };
    let out = run
        .command(1, &[])
        .env("EDDY_CRASH_IN_CHECKPOINT", "3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash hook did not fire");
    let ckpt = dir.path().join("ckpt");
    assert!(ckpt.join("chk-0000000002/_metadata").exists());
    assert!(
        !ckpt.join("chk-0000000003/_metadata").exists(),
        "checkpoint 3 must not be complete"
    );
    let stderr = run.finish(1);
    assert!(
        stderr.contains("resuming from checkpoint 2"),
        "the earlier checkpoint restores: {stderr}"
    );
    assert!(
        !ckpt.join("chk-0000000003").exists() || ckpt.join("chk-0000000003/_metadata").exists(),
        "the half-written checkpoint is cleaned up or replaced by a complete one"
    );
    run.assert_output_equals_flink();
}

#[test]
fn a_finished_job_only_recommits() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q8",
        generate: false,
    };
    run.finish(1);
    let stderr = run.finish(1);
    assert!(stderr.contains("already finished"), "{stderr}");
    run.assert_output_equals_flink();
}

#[test]
fn a_checkpoint_of_another_job_or_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q5 = Run {
        dir: dir.path(),
        query: "q5",
        generate: false,
    };
    // Killed or finished, it leaves a completed checkpoint of `nexmark-q5` behind.
    q5.kill_after_checkpoints(1, &[], 1);
    let q7 = Run {
        dir: dir.path(),
        query: "q7",
        generate: false,
    };
    let out = q7.command(1, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("belongs to job `nexmark-q5`"), "{stderr}");

    // A job whose stateful operator was renamed is refused, naming the operator.
    let job = std::fs::read_to_string(repo().join("jobs/nexmark/q5.toml")).unwrap();
    let renamed = dir.path().join("q5-renamed.toml");
    std::fs::write(&renamed, job.replace("max_bids", "top_bids")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .current_dir(dir.path())
        .arg("run")
        .arg(&renamed)
        .args(["--param", &format!("input={}", input().display())])
        .args(["--param", "output=out/", "--checkpoint-dir", "ckpt/"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`top_bids`") || stderr.contains("`max_bids`"),
        "{stderr}"
    );

    // Garbage in the newest metadata: a clear error, no panic.
    let ckpt = dir.path().join("ckpt");
    let newest = std::fs::read_dir(&ckpt)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .max()
        .unwrap();
    std::fs::write(newest.join("_metadata"), b"{ not json").unwrap();
    let out = q5.command(1, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Stops a run with SIGTERM after its first checkpoint; it writes a savepoint and exits 0. A run
/// that reaches its end before the signal lands is started over (up to three times).
fn stop_with_savepoint(run: &Run, savepoints: &str) -> String {
    for _ in 0..3 {
        let mut child = run
            .command(1, &["--savepoint-dir", savepoints, "--max-rate", "100000"])
            .spawn()
            .unwrap();
        let started = Instant::now();
        while run.checkpoints() < 1 && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let out = wait_bounded(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        if stderr.contains("stopped with savepoint") {
            return stderr;
        }
        for d in ["out", "ckpt", savepoints] {
            std::fs::remove_dir_all(run.dir.join(d)).ok();
        }
    }
    panic!("the job finished before SIGTERM stopped it, three times");
}

#[test]
fn stop_with_savepoint_then_resume_in_place_or_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q8",
        generate: false,
    };
    stop_with_savepoint(&run, "sp/");
    // Again with the same checkpoint directory: the savepoint, newer than any checkpoint there,
    // is where it resumes (an older checkpoint would publish rows twice).
    let stderr = run.finish(1);
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    assert!(
        stderr.contains("sp"),
        "resumes from the savepoint: {stderr}"
    );
    run.assert_output_equals_flink();

    // From the savepoint alone, into a fresh checkpoint directory, at another parallelism.
    let other = tempfile::tempdir().unwrap();
    let run = Run {
        dir: other.path(),
        query: "q8",
        generate: false,
    };
    stop_with_savepoint(&run, "sp/");
    std::fs::remove_dir_all(other.path().join("ckpt")).unwrap();
    let child = run
        .command(2, &["--from-savepoint", "sp/"])
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    run.assert_output_equals_flink();
}

#[test]
fn q5_with_tiny_state_caches_survives_kill_9() {
    // Ten cached entries per state and a 1 MiB block cache: nearly every state access goes to
    // RocksDB, evictions write back all the time, and the answer must not change.
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q5",
        generate: false,
    };
    let tiny = ["--state-cache-entries", "10", "--state-cache-mb", "1"];
    for _ in 0..5 {
        if !run.kill_after_checkpoints(2, &tiny, 2) {
            run.start_over();
            continue;
        }
        let out = wait_bounded(
            run.command(2, &tiny).spawn().unwrap(),
            Duration::from_secs(120),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        run.assert_output_equals_flink();
        return;
    }
    panic!("the job finished before it could be killed, five times");
}

/// Committed part files of `out/` with their contents.
fn committed_parts(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .map(|n| {
            let bytes = std::fs::read(out.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// The checkpoint id in a part file's name (`part-<id>-<subtask>-<sink>.jsonl`).
fn part_checkpoint(name: &str) -> u64 {
    name.split('-').nth(1).and_then(|n| n.parse().ok()).unwrap()
}

#[test]
fn checkpoint_ids_are_never_reused_after_the_newest_checkpoint_is_removed() {
    // The documented fallback for a damaged checkpoint: remove it and restart from the one
    // before. Before the fix the run went on at restored + 1 and published files under ids
    // already used, replacing committed output.
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q1",
        generate: false,
    };
    assert!(run.kill_after_checkpoints(1, &["--max-rate", "20000"], 4));
    let newest = run.checkpoints_made();
    let before = committed_parts(&dir.path().join("out"));
    assert!(!before.is_empty(), "no part committed before the kill");
    let used = before.keys().map(|n| part_checkpoint(n)).max().unwrap();
    std::fs::remove_dir_all(dir.path().join(format!("ckpt/chk-{newest:010}"))).unwrap();
    run.finish(1);
    let after = committed_parts(&dir.path().join("out"));
    for (name, bytes) in &before {
        assert_eq!(after.get(name), Some(bytes), "{name} was replaced");
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        assert!(
            part_checkpoint(name) > used.max(newest),
            "{name} reuses a checkpoint id (the first run reached {newest})"
        );
    }
}

#[test]
fn two_runs_on_one_checkpoint_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        query: "q5",
        generate: false,
    };
    let mut first = run
        .command(1, &["--max-rate", "2000"])
        .spawn()
        .expect("start eddy");
    let started = Instant::now();
    while run.checkpoints() < 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = wait_bounded(run.spawn(1), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is in use by another eddy process")
            && stderr.contains(&first.id().to_string()),
        "{stderr}"
    );
    let _ = first.kill();
    let _ = first.wait();
    // Killed, it holds nothing: the next run resumes.
    run.finish(1);
    run.assert_output_equals_flink();
}

/// A job whose input has rows far later than its watermark delay: `eddy run` killed at random
/// moments and restarted must drop exactly the rows an uninterrupted run drops. (Before the
/// fix a restored task's watermark started at −∞: a late row replayed right after a restore
/// was kept and reopened a window that had fired.)
#[test]
fn rows_later_than_the_watermark_delay_are_dropped_after_a_restore_too() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 rows one second apart over 100 keys; every 50th row is an hour late.
    let input = dir.path().join("late.jsonl");
    let mut text = String::new();
    for i in 0..20_000u64 {
        let t = if i % 50 == 49 {
            i.saturating_sub(3600)
        } else {
            i
        };
        text.push_str(&format!(
            "{{\"k\":{},\"ts\":\"2026-01-01 {:02}:{:02}:{:02}.000\"}}\n",
            i % 100,
            t / 3600,
            t / 60 % 60,
            t % 60
        ));
    }
    std::fs::write(&input, text).unwrap();
    let job = dir.path().join("late.toml");
    std::fs::write(
        &job,
        r#"name = "late-rows"
[params]
input = { description = "rows" }
output = { description = "windows" }

[[source]]
name = "rows"
connector = "file"
format = "json"
path = "${input}"
columns = [{ name = "k", type = "BIGINT" }, { name = "ts", type = "TIMESTAMP" }]
watermark = { column = "ts", delay = "2s" }

[[operator]]
name = "per_minute"
type = "window_aggregate"
input = "rows"
window = { type = "tumble", time = "ts", size = "1min" }
group_by = ["k"]
aggregates = ["count(*) AS n"]

[[sink]]
name = "out"
input = "per_minute"
connector = "file"
path = "${output}"
"#,
    )
    .unwrap();
    let eddy = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
        cmd.current_dir(dir.path())
            .arg("run")
            .arg(&job)
            .arg("--param")
            .arg(format!("input={}", input.display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let reference = wait_bounded(
        eddy(&["--param", "output=reference.jsonl"])
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert!(reference.status.success());
    let mut rng = Rng(11);
    let mut resumed = 0;
    for _ in 0..8 {
        let mut child = eddy(&[
            "--param",
            "output=out/",
            "--checkpoint-dir",
            "ckpt/",
            "--checkpoint-interval",
            "20ms",
            "--max-rate",
            "4000",
        ])
        .spawn()
        .unwrap();
        // 20,000 rows take 5 s at this rate: eight runs of at most 0.5 s never reach the end.
        std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("resuming from checkpoint") {
            resumed += 1;
        }
    }
    let last = wait_bounded(
        eddy(&[
            "--param",
            "output=out/",
            "--checkpoint-dir",
            "ckpt/",
            "--checkpoint-interval",
            "20ms",
        ])
        .spawn()
        .unwrap(),
        Duration::from_secs(60),
    );
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(resumed > 0, "no run resumed from a checkpoint");
    let mut committed = String::new();
    let mut parts: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    parts.sort();
    for p in parts {
        committed.push_str(&std::fs::read_to_string(p).unwrap());
    }
    std::fs::write(dir.path().join("committed.jsonl"), committed).unwrap();
    if let Err(diff) = eddy_jobs::compare::compare_files(
        &dir.path().join("reference.jsonl"),
        &dir.path().join("committed.jsonl"),
    ) {
        panic!("the restored runs differ from the uninterrupted one: {diff}");
    }
}

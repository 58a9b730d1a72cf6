//! The `eddy` binary as a user meets it: help, exit codes, error messages that point at the
//! mistake, malformed input that goes to the dead-letter file while the job goes on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn eddy(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run eddy")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn repo() -> PathBuf {
    // At run time first: a target dir shared between checkouts may hold a binary built elsewhere.
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

const SOURCE: &str = r#"
[params]
input = { description = "events" }
output = { default = "out.jsonl" }

[[source]]
name = "events"
connector = "file"
format = "nexmark"
path = "${input}"
watermark = { column = "dateTime", delay = "4s" }
"#;

const SINK: &str = r#"
[[sink]]
name = "result"
input = "op"
connector = "file"
path = "${output}"
"#;

/// Writes a job with one operator between the Nexmark source and a file sink.
fn job_with(dir: &Path, operator: &str) -> PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(&path, format!("{SOURCE}\n[[operator]]\n{operator}\n{SINK}")).unwrap();
    path
}

/// Runs `eddy check` on a job and expects exit code 2 with every fragment in the message.
fn expect_job_error(operator: &str, extra_args: &[&str], fragments: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let job = job_with(dir.path(), operator);
    let mut args = vec!["check", job.to_str().unwrap(), "--param", "input=x.jsonl"];
    args.extend_from_slice(extra_args);
    let out = eddy(&args, dir.path());
    let message = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code 2 expected:\n{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "missing `{fragment}` in:\n{message}"
        );
    }
}

#[test]
fn help_explains_every_run_flag() {
    let out = eddy(&["run", "--help"], &repo());
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--param",
        "--parallelism",
        "--dead-letter",
        "--generate",
        "--rate",
        "--batch-size",
        "--quiet",
    ] {
        assert!(
            help.contains(flag),
            "`eddy run --help` does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn bad_arguments_exit_2() {
    let out = eddy(
        &["run", "jobs/nexmark/q0.toml", "--parallelism", "0"],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = eddy(
        &["run", "jobs/nexmark/q0.toml", "--param", "novalue"],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NAME=VALUE"), "{}", stderr(&out));
    let out = eddy(&["run", "no/such/job.toml"], &repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the job file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_operator_type_is_named_with_a_suggestion() {
    expect_job_error(
        "name = \"op\"\ntype = \"fliter\"\ninput = \"events.bid\"\nwhere = \"price > 1\"",
        &[],
        &[
            "unknown operator type `fliter`",
            "job.toml:15:8",
            "did you mean `filter`",
        ],
    );
}

#[test]
fn unknown_field_is_refused_with_its_position() {
    expect_job_error(
        "name = \"op\"\ntype = \"filter\"\ninput = \"events.bid\"\nwehre = \"price > 1\"",
        &[],
        &["unknown field `wehre`", "job.toml:17:1"],
    );
}

#[test]
fn field_of_another_operator_type_is_refused() {
    expect_job_error(
        "name = \"op\"\ntype = \"filter\"\ninput = \"events.bid\"\nwhere = \"price > 1\"\ngroup_by = [\"auction\"]",
        &[],
        &["field `group_by` does not apply to a `filter` operator", "job.toml:18"],
    );
}

#[test]
fn a_ttl_is_refused_where_state_ends_by_itself_and_must_be_a_duration() {
    expect_job_error(
        "name = \"op\"\ntype = \"window_aggregate\"\ninput = \"events.bid\"\nwindow = { type = \"tumble\", time = \"dateTime\", size = \"10s\" }\naggregates = [\"COUNT(*) AS n\"]\nttl = \"1h\"",
        &[],
        &["field `ttl` does not apply to a `window_aggregate` operator", "job.toml:19"],
    );
    expect_job_error(
        "name = \"op\"\ntype = \"group_aggregate\"\ninput = \"events.bid\"\ngroup_by = [\"auction\"]\naggregates = [\"COUNT(*) AS n\"]\nttl = \"soon\"",
        &[],
        &["`ttl`: `soon` is not a duration", "job.toml:19"],
    );
}

#[test]
fn unknown_column_points_into_the_expression() {
    expect_job_error(
        "name = \"op\"\ntype = \"select\"\ninput = \"events.bid\"\ncolumns = [\"auction\", \"prce * 2 AS p\"]",
        &[],
        &["operator `op`, field `columns[1]`", "prce", "job.toml:17:24", "price"],
    );
}

#[test]
fn type_error_in_an_expression() {
    expect_job_error(
        "name = \"op\"\ntype = \"filter\"\ninput = \"events.bid\"\nwhere = \"channel + 1 > 2\"",
        &[],
        &["field `where`", "STRING", "job.toml:17"],
    );
}

#[test]
fn missing_and_unknown_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let job = job_with(
        dir.path(),
        "name = \"op\"\ntype = \"filter\"\ninput = \"events.bid\"\nwhere = \"price > 1\"",
    );
    let out = eddy(&["check", job.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("missing parameter `input`"), "{message}");
    assert!(message.contains("--param input=VALUE"), "{message}");
    let out = eddy(
        &[
            "check",
            job.to_str().unwrap(),
            "--param",
            "input=x",
            "--param",
            "outptu=y",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean `output`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cycles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycle.toml");
    std::fs::write(
        &path,
        format!(
            "{SOURCE}\n[[operator]]\nname = \"a\"\ntype = \"union\"\ninputs = [\"events.bid\", \"op\"]\n\n\
             [[operator]]\nname = \"op\"\ntype = \"filter\"\ninput = \"a\"\nwhere = \"price > 1\"\n{SINK}"
        ),
    )
    .unwrap();
    let out = eddy(
        &["check", path.to_str().unwrap(), "--param", "input=x"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("cycle"), "{message}");
    assert!(
        message.contains("a -> op") || message.contains("op -> a"),
        "{message}"
    );
}

#[test]
fn malformed_toml_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "name = \"x\"\n[[source]\n").unwrap();
    let out = eddy(&["check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("broken.toml:2"), "{}", stderr(&out));
}

#[test]
fn every_shipped_job_checks() {
    for entry in std::fs::read_dir(repo().join("jobs/nexmark")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = eddy(
                &["check", path.to_str().unwrap(), "--param", "input=x"],
                &repo(),
            );
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        }
    }
}

/// A few good events, then bad lines of several kinds: the job finishes, the good rows are all
/// in the output, and each bad line is in the dead-letter file with its line number and reason.
#[test]
fn malformed_lines_go_to_the_dead_letter_file_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bid = |auction: i64, price: i64, ms: u32| {
        format!(
            "{{\"event_type\":2,\"person\":null,\"auction\":null,\"bid\":{{\"auction\":{auction},\"bidder\":1,\"price\":{price},\"channel\":\"Google\",\"url\":\"u\",\"dateTime\":\"2026-01-01 00:00:00.{ms:03}\",\"extra\":\"\"}}}}"
        )
    };
    let lines = [
        bid(1000, 10, 1),
        "{not json".to_string(),
        bid(1001, 20, 2),
        "{\"event_type\":2,\"person\":null,\"auction\":null,\"bid\":{\"auction\":1,\"bidder\":1,\"price\":\"abc\",\"channel\":\"x\",\"url\":\"u\",\"dateTime\":\"2026-01-01 00:00:00.003\",\"extra\":\"\"}}".to_string(),
        "{\"event_type\":7}".to_string(),
        bid(1002, 30, 4),
    ];
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = eddy(
        &[
            "run",
            repo().join("jobs/nexmark/q0.toml").to_str().unwrap(),
            "--param",
            &format!("input={}", input.display()),
            "--param",
            "output=out/q0.jsonl",
            "--dead-letter",
            "bad.jsonl",
        ],
        dir.path(),
    );
    let message = stderr(&out);
    assert!(out.status.success(), "{message}");
    assert!(
        message.contains("3 malformed input lines went to bad.jsonl"),
        "{message}"
    );
    let output = std::fs::read_to_string(dir.path().join("out/q0.jsonl")).unwrap();
    assert_eq!(output.lines().count(), 3, "{output}");
    for price in ["\"price\":10", "\"price\":20", "\"price\":30"] {
        assert!(output.contains(price), "{output}");
    }
    let dead = std::fs::read_to_string(dir.path().join("bad.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let numbers: Vec<i64> = dead.iter().map(|d| d["line"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![2, 4, 5]);
    assert!(
        dead[1]["reason"].as_str().unwrap().contains("price"),
        "{:?}",
        dead[1]
    );
    assert_eq!(dead[0]["raw"], "{not json");
}

#[test]
fn runs_a_job_on_the_generator_and_says_where_the_output_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy(
        &[
            "run",
            repo().join("jobs/nexmark/q8.toml").to_str().unwrap(),
            "--generate",
            "20000",
            "--parallelism",
            "2",
            "--param",
            "output=q8.jsonl",
        ],
        dir.path(),
    );
    let message = stderr(&out);
    assert!(out.status.success(), "{message}");
    assert!(message.contains("written to q8.jsonl"), "{message}");
    let rows = std::fs::read_to_string(dir.path().join("q8.jsonl")).unwrap();
    assert!(rows.lines().count() > 0);
    assert!(!dir.path().join(".q8.jsonl.inprogress").exists());
}

/// Output to a device is written in place: the staging-and-rename that publishes regular files
/// must never replace /dev/null.
#[test]
fn output_to_a_device_is_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let out = eddy(
        &[
            "run",
            repo().join("jobs/nexmark/q2.toml").to_str().unwrap(),
            "--generate",
            "5000",
            "--param",
            "output=/dev/null",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "/dev/null must stay a device"
    );
}

#[test]
fn with_allow_path_a_run_reads_and_writes_only_under_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("work/etc")).unwrap();
    let q0 = repo().join("jobs/nexmark/q0.toml");
    let run = |input: &str, output: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            q0.to_str().unwrap(),
            "--allow-path",
            "work",
            "--dead-letter",
            "work/dl.jsonl",
            "--param",
        ];
        let input = format!("input={input}");
        let output = format!("output={output}");
        args.extend([input.as_str(), "--param", output.as_str()]);
        args.extend(extra);
        eddy(&args, dir.path())
    };
    for (input, output, extra, what) in [
        (
            "/etc/passwd",
            "work/out.jsonl",
            &[][..],
            "the input of source",
        ),
        (
            "work/etc/passwd",
            "work/out.jsonl",
            &[],
            "the input of source",
        ),
        (
            "work/../../x.jsonl",
            "work/out.jsonl",
            &[],
            "the input of source",
        ),
        ("work/in.jsonl", "out.jsonl", &[], "the output of sink"),
        (
            "work/in.jsonl",
            "work/out.jsonl",
            &["--checkpoint-dir", "/tmp/elsewhere"],
            "--checkpoint-dir",
        ),
    ] {
        let out = run(input, output, extra);
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{input} {output}: {message}");
        assert!(
            message.contains(what) && message.contains("outside the allowed paths"),
            "{message}"
        );
    }
    assert!(!dir.path().join("out.jsonl").exists());
    // Inside: it runs (the input does not exist, which is the run's own error).
    let out = run("work/in.jsonl", "work/out.jsonl", &[]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(message.contains("cannot read input"), "{message}");
}

#[test]
fn a_missing_input_file_is_a_clear_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = eddy(
        &[
            "run",
            repo().join("jobs/nexmark/q0.toml").to_str().unwrap(),
            "--param",
            "input=no/such/events.jsonl",
            "--param",
            "output=out.jsonl",
        ],
        dir.path(),
    );
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("cannot read input `no/such/events.jsonl`"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "no output for a failed job"
    );
}

#[test]
fn stdout_sink_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "[[source]]\nname = \"events\"\nconnector = \"nexmark-generator\"\nevents = 200\n\n\
         [[operator]]\nname = \"op\"\ntype = \"filter\"\ninput = \"events.person\"\nwhere = \"id < 1002\"\n\n\
         [[sink]]\nname = \"out\"\ninput = \"op\"\nconnector = \"stdout\"\n",
    )
    .unwrap();
    let out = eddy(&["run", "-q", job.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<i64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![1000, 1001]);
}

/// `eddy sql` fed statements on its standard input, as someone types them: a table declared,
/// a SELECT printed as a table, a mistake reported with its position while the session goes
/// on, an INSERT run as a job, a script of declarations given up front.
#[test]
fn the_sql_shell_declares_queries_and_inserts() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clicks.jsonl"),
        "{\"user_id\": 1, \"page\": \"home\"}\n{\"user_id\": 2, \"page\": \"home\"}\n{\"user_id\": 1, \"page\": \"cart\"}\nnot json\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ddl.sql"),
        "-- the clicks\nCREATE TABLE clicks (user_id BIGINT, page STRING)\n  WITH ('connector' = 'filesystem', 'path' = '${CLICKS}', 'format' = 'json');\n",
    )
    .unwrap();
    let statements = "\
SHOW TABLES;
SELECT page, COUNT(*) AS n
  FROM clicks GROUP BY page;
SELECT nope FROM clicks;
CREATE TABLE per_user (user_id BIGINT, pages BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');
INSERT INTO per_user SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id;
SELECT * FROM clicks WHERE page = 'cart';
CREATE TABLE result (user_id BIGINT, page STRING)
  WITH ('connector' = 'filesystem', 'path' = '${CLICKS}', 'format' = 'json');
SELECT COUNT(*) AS pages FROM result;
QUIT
";
    let out_file = dir.path().join("per_user.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["sql", "ddl.sql", "--param", "CLICKS=clicks.jsonl"])
        .arg("--param")
        .arg(format!("OUT={}", out_file.display()))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(statements.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    for expected in [
        "clicks\n",
        "| page | n |",
        "| cart | 1 |",
        "| home | 2 |",
        "2 rows",
        "statement 2:1",
        "nope",
        "[OK]",
        "the job ran to its end; written: per_user",
        "| 1       | cart |",
        "1 row",
        "| pages |\n+-------+\n| 3     |",
        "(1 malformed input line(s) skipped",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
    let mut written: Vec<String> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["{\"user_id\":1,\"pages\":2}", "{\"user_id\":2,\"pages\":1}"]
    );
    // A script given up front must only prepare the session.
    std::fs::write(
        dir.path().join("run.sql"),
        "INSERT INTO per_user SELECT 1, 2;",
    )
    .unwrap();
    let out = eddy(
        &["sql", "ddl.sql", "run.sql", "--param", "CLICKS=x"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a declaration or SET"),
        "{}",
        stderr(&out)
    );
}

//! Every shipped Nexmark job, on the shared 100k-event input, at parallelism 1 and 2, must give
//! exactly Apache Flink's answer (jobs/nexmark/expected, copied from shared/nexmark/expected).
//!
//! The input is regenerated with the Nexmark generator into a temporary JSON-lines file (it is
//! byte-for-byte the shared file: see the format tests), so the jobs run through the real file
//! source and the test needs nothing outside the repository.

use eddy_jobs::compare::compare_files;
use eddy_jobs::{compile_file, CompileOptions};
use eddy_operators::format::write_nexmark_events;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shared input, generated once per test process.
fn input() -> &'static Path {
    static INPUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = INPUT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events-100k.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        write_nexmark_events(&mut out, 100_000, 1_767_225_600_000, 1000).unwrap();
        (dir, path)
    });
    path
}

fn repo() -> PathBuf {
    // At run time first: a target dir shared between checkouts may hold a binary built elsewhere.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .into()
}

fn expected(query: &str) -> PathBuf {
    let dir = repo().join("nexmark/expected");
    let plain = dir.join(format!("{query}.jsonl"));
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{query}.jsonl.gz"))
    }
}

/// Runs a query at a parallelism and compares with Flink's answer.
fn check(query: &str, parallelism: u32) {
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join(format!("{query}.jsonl"));
    let options = CompileOptions {
        params: [
            ("input".to_string(), input().display().to_string()),
            ("output".to_string(), output.display().to_string()),
        ]
        .into_iter()
        .collect(),
        parallelism: Some(parallelism),
        generate: None,
        topic_files: None,
    };
    let job = repo().join(format!("nexmark/{query}.toml"));
    let graph = compile_file(&job, &options).unwrap_or_else(|e| panic!("{e}"));
    let malformed = eddy_operators::run_to_end(&graph, out_dir.path().join("dead-letter.jsonl"))
        .unwrap_or_else(|e| panic!("{query} p={parallelism} failed: {e}"));
    assert_eq!(malformed, 0, "the input has no malformed lines");
    if let Err(report) = compare_files(&expected(query), &output) {
        panic!("{query} at parallelism {parallelism} differs from Flink:\n{report}");
    }
}

macro_rules! nexmark_tests {
    ($($query:ident),* $(,)?) => {
        mod parallelism_1 {
            $( #[test] fn $query() { super::check(stringify!($query), 1); } )*
        }
        mod parallelism_2 {
            $( #[test] fn $query() { super::check(stringify!($query), 2); } )*
        }
    };
}

nexmark_tests!(
    q0, q1, q2, q3, q4, q5, q7, q8, q9, q11, q14, q15, q16, q17, q18, q19, q20, q21, q22
);

/// Every job file in jobs/nexmark has a test above and an expected answer.
#[test]
fn every_shipped_query_is_tested() {
    let tested = [
        "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q9", "q11", "q14", "q15", "q16", "q17",
        "q18", "q19", "q20", "q21", "q22",
    ];
    for entry in std::fs::read_dir(repo().join("nexmark")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(tested.contains(&stem.as_str()), "{stem} has no test");
            assert!(expected(&stem).exists(), "{stem} has no expected answer");
        }
    }
}

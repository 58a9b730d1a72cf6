//! The Nexmark benchmark's own Flink SQL (tests/queries, copied from the team's shared Flink
//! queries: ddl.sql and one file per query), run as it is on the 100k-event input at
//! parallelism 1 and 2, must give exactly Apache Flink's answer (jobs/nexmark/expected).

mod common;

use eddy_jobs::compare::compare_files;
use eddy_jobs::{compile_str, CompileOptions};
use eddy_operators::format::write_nexmark_events;
use eddy_sql::{compile_files, SinkDir, SqlOptions};
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
    std::env::var_os("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .into()
}

fn script(query: &str) -> Vec<PathBuf> {
    let dir = repo().join("tests/queries");
    vec![dir.join("ddl.sql"), dir.join(format!("{query}.sql"))]
}

fn expected(query: &str) -> PathBuf {
    let dir = repo().join("../jobs/nexmark/expected");
    let plain = dir.join(format!("{query}.jsonl"));
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{query}.jsonl.gz"))
    }
}

/// Plans `query`'s script with its sink into `dir`.
fn plan(query: &str, dir: &Path) -> Result<eddy_sql::SqlJob, eddy_sql::SqlError> {
    let options = SqlOptions {
        params: [("INPUT".to_string(), input().display().to_string())].into(),
        sink_dir: Some(SinkDir {
            dir: dir.to_path_buf(),
            parts: false,
        }),
        ..Default::default()
    };
    compile_files(&script(query), &options)
}

/// Runs a query's SQL at a parallelism and compares with Flink's answer.
fn check(query: &str, parallelism: u32) {
    let out = tempfile::tempdir().unwrap();
    let job = plan(query, out.path()).unwrap_or_else(|e| panic!("{e}"));
    common::run_job(&format!("{query}.sql"), &job.toml, parallelism, out.path());
    let output = out.path().join(format!("nexmark_{query}.jsonl"));
    if let Err(report) = compare_files(&expected(query), &output) {
        panic!(
            "{query} at parallelism {parallelism} differs from Flink:\n{report}\nthe plan:\n{}",
            job.toml
        );
    }
}

macro_rules! queries {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            check(stringify!($name), 1);
            check(stringify!($name), 2);
        }
    )*};
}

queries!(q0, q1, q2, q3, q4, q5, q7, q8, q9, q11, q14, q15, q16, q17, q18, q19, q20, q21, q22);

const QUERIES: [&str; 19] = [
    "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q9", "q11", "q14", "q15", "q16", "q17", "q18",
    "q19", "q20", "q21", "q22",
];

/// The plan of each query has the operators of the hand-written job (jobs/nexmark/qN.toml):
/// the same kinds, in the same number, so SQL costs nothing at run time. Extra `select`
/// nodes (renames the hand-written jobs fold into their neighbours) are counted apart.
#[test]
fn each_plan_has_the_operators_of_the_hand_written_job() {
    let out = tempfile::tempdir().unwrap();
    let kinds = |g: &eddy_runtime::graph::JobGraph| {
        let mut v: Vec<String> = g
            .nodes
            .iter()
            .map(|n| {
                format!("{:?}", n.kind)
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .filter(|k| k != "Select" && k != "Project")
            .collect();
        v.sort();
        v
    };
    let mut report = Vec::new();
    for q in QUERIES {
        let job = plan(q, out.path()).unwrap_or_else(|e| panic!("{e}"));
        let sql = compile_str(q, &job.toml, &CompileOptions::default()).unwrap();
        let options = CompileOptions {
            params: [
                ("input".to_string(), "in.jsonl".to_string()),
                ("output".to_string(), "out.jsonl".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let toml =
            eddy_jobs::compile_file(&repo().join(format!("../jobs/nexmark/{q}.toml")), &options)
                .unwrap();
        report.push(format!(
            "{q}: {} nodes from SQL, {} by hand",
            sql.nodes.len(),
            toml.nodes.len()
        ));
        assert_eq!(kinds(&sql), kinds(&toml), "{q}:\n{}", job.toml);
    }
    eprintln!("{}", report.join("\n"));
}

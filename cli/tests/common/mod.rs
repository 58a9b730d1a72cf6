//! What the process-level tests share: the Nexmark input, bounded waiting, and the comparison of
//! committed output with Flink's answer.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use eddy_jobs::compare::compare_files;
use eddy_operators::format::write_nexmark_events;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod shop;

/// The shared Nexmark input (100k events), generated once per test process.
pub fn input() -> &'static Path {
    static INPUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = INPUT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events-100k.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        write_nexmark_events(&mut out, 100_000, 1_767_225_600_000, 1000).unwrap();
        (dir, path)
    });
    path
}

pub fn repo() -> PathBuf {
    // At run time first: a target dir shared between checkouts may hold a binary built elsewhere.
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

/// Flink's answer for a query.
pub fn expected(query: &str) -> PathBuf {
    let dir = repo().join("jobs/nexmark/expected");
    let plain = dir.join(format!("{query}.jsonl"));
    if plain.exists() {
        plain
    } else {
        dir.join(format!("{query}.jsonl.gz"))
    }
}

/// Waits for a process at most `limit` (then kills it and fails).
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Concatenates the committed files of `out` (regular files not starting with '.' or '_')
/// into `scratch` and compares them with Flink's answer for `query`.
pub fn assert_committed_equals_flink(out: &Path, query: &str, scratch: &Path) {
    let mut committed: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.starts_with('_')
        })
        .collect();
    committed.sort();
    let mut file = std::fs::File::create(scratch).unwrap();
    for f in &committed {
        file.write_all(&std::fs::read(f).unwrap()).unwrap();
    }
    drop(file);
    if let Err(diff) = compare_files(&expected(query), scratch) {
        panic!("{query}: committed output differs from Flink's: {diff}");
    }
}

/// q8 with its file sink replaced by the PostgreSQL sink.
pub fn q8_into_postgres(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("jobs/nexmark/q8.toml")).unwrap();
    let (graph, _) = text.split_once("[[sink]]").unwrap();
    let job = format!(
        "{graph}[[sink]]\nname = \"result\"\ninput = \"q8\"\nconnector = \"postgres\"\nurl = \"${{pg}}\"\ntable = \"q8\"\n"
    )
    .replace(
        "output = { description = \"the result file (JSON lines)\", default = \"q8.jsonl\" }",
        "pg = { description = \"PostgreSQL URL\" }",
    );
    let path = dir.join("q8-pg.toml");
    std::fs::write(&path, job).unwrap();
    path
}

/// The table as JSON lines, in Flink's format.
pub fn dump_q8_table(server: &eddy_postgres::testing::PgServer, to: &Path) {
    let rows = server
        .client()
        .query(
            "SELECT json_build_object('id', id, 'name', name,
                 'stime', to_char(stime, 'YYYY-MM-DD HH24:MI:SS.MS'))::text FROM q8",
            &[],
        )
        .unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
}

/// A cluster of the chaos harness in `dir`: three coordinators and `workers` workers as
/// processes, every link through a proxy the test controls, mutual TLS and an admin token
/// (which this process's calls carry); with the runtime its proxies run on. Returns once
/// every worker registered.
pub fn proxied_cluster(
    dir: &Path,
    workers: usize,
    log_filter: &str,
) -> (tokio::runtime::Runtime, eddy_chaos::cluster::Cluster) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime
        .block_on(eddy_chaos::cluster::Cluster::start(
            &eddy_chaos::cluster::ClusterConfig {
                exe: env!("CARGO_BIN_EXE_eddy").into(),
                workers,
                slots: 4,
                dir: dir.join("cluster"),
                log_filter: log_filter.into(),
                fault_dir: dir.join("faults"),
                seed: 1,
                allow_paths: vec![dir.to_path_buf(), input().parent().unwrap().to_path_buf()],
            },
        ))
        .unwrap();
    let client = cluster.client_tls_dir();
    let started = Instant::now();
    loop {
        let out = cluster_cli(&cluster, Some(&client), Some(cluster.token()), &["workers"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == workers {
            return (runtime, cluster);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the workers never registered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `eddy ARGS` against the coordinators of `cluster` (bounded), with the client certificate
/// directory `tls` and the bearer token `token`, each only if given.
pub fn cluster_cli(
    cluster: &eddy_chaos::cluster::Cluster,
    tls: Option<&Path>,
    token: Option<&str>,
    args: &[&str],
) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(args)
        .env("EDDY_COORDINATORS", cluster.coordinator_addrs().join(","))
        .env_remove("EDDY_TLS_DIR")
        .env_remove("EDDY_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(dir) = tls {
        cmd.env("EDDY_TLS_DIR", dir);
    }
    if let Some(token) = token {
        cmd.env("EDDY_TOKEN", token);
    }
    wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(60))
}

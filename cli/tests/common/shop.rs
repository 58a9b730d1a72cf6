//! The e-commerce tests' shared parts: a warehouse on a real PostgreSQL server, `eddy serve`,
//! the generator, and the comparison of the warehouse with the generator's ground truth.

use eddy_postgres::testing::PgServer;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn eddy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
}

/// The settings every e-commerce test generates with: 12 minutes of a small shop, with a
/// revenue drop to detect and the default shares of malformed and late events.
pub const GEN: &[&str] = &[
    "--seed",
    "7",
    "--start",
    "2026-01-01T00:00:00Z",
    "--rate",
    "80",
    "--duration",
    "12min",
    "--users",
    "3000",
    "--products",
    "400",
    "--malformed-share",
    "0.01",
    "--late-share",
    "0.003",
    "--anomaly",
    "revenue-drop:at=10min,for=1min,factor=0",
];

/// A new database on `server` with the warehouse's migrations applied; its URL.
pub fn warehouse(server: &PgServer, name: &str) -> String {
    server
        .client()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let url = server.url().replace("/postgres", &format!("/{name}"));
    let out = eddy()
        .args(["warehouse", "migrate", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    url
}

/// Generates the test data set into `to` (`file:DIR`, `http://...`) and returns the ground
/// truth.
pub fn generate(to: &str, dir: &Path, extra: &[&str]) -> Value {
    let expected = dir.join(format!("expected-{}.json", std::process::id()));
    let out = eddy()
        .args(["gen", "ecommerce"])
        .args(GEN)
        .args(["--to", to, "--expected"])
        .arg(&expected)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&expected).unwrap()).unwrap()
}

/// A running `eddy serve`, killed on drop, with its API keys.
pub struct Serve {
    child: Child,
    pub url: String,
    /// A producer key without a rate limit.
    pub key: String,
    /// A viewer key (dashboard and `/metrics`).
    pub viewer: String,
    /// The key file it reads.
    pub keys: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `out`, once it says the command succeeded (else its standard error is the failure).
pub fn succeeded(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Makes a key with `eddy api-key create`; the key.
pub fn api_key(file: &Path, name: &str, extra: &[&str]) -> String {
    let out = eddy()
        .args(["api-key", "create", "--name", name, "--file"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    String::from_utf8(succeeded(out).stdout)
        .unwrap()
        .trim()
        .to_string()
}

impl Serve {
    /// `eddy serve` on an ephemeral loopback port with a key file of two keys.
    pub fn start(args: &[&str]) -> Serve {
        Serve::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.toml");
        let key = api_key(&keys, "test", &["--rate", "unlimited"]);
        let viewer = api_key(&keys, "watch", &["--role", "viewer"]);
        let mut child = eddy()
            .arg("serve")
            .args(["--listen", listen, "--api-keys"])
            .arg(&keys)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("eddy serve prints its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .expect("an address")
            .trim_end_matches(['/', ',', ')'])
            .to_string();
        Serve {
            child,
            url,
            key,
            viewer,
            keys,
            _dir: dir,
        }
    }
}

impl Serve {
    /// Sends SIGTERM and waits (bounded) for the process to end; its exit code.
    pub fn terminate(mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unused_imports)]
pub use eddy_chaos::shop::{compare_warehouses, compare_with_truth};

/// Waits until `done()` or fails after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! A real Kafka broker for tests: tansu (a Kafka-compatible broker written in Rust) with its
//! in-memory storage, on a free loopback port, stopped on drop.
//!
//! The binary is found at `$EDDY_TANSU`, on `PATH`, or where `.ci/run` installs it
//! (`~/.cache/eddy/tools/bin/tansu`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker.
pub struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Where the `tansu` binary is, if anywhere.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDDY_TANSU") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".cache/eddy/tools/bin/tansu");
        p.is_file().then_some(p)
    })
}

impl Broker {
    /// Starts a broker, or says what is missing.
    pub fn start() -> Result<Broker, String> {
        let binary = tansu_binary().ok_or(
            "the tansu Kafka broker is not installed: `cargo install tansu --locked --features dynostore` (.ci/run installs it into ~/.cache/eddy/tools)",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = tempfile::Builder::new()
            .prefix("eddy-kafka-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log =
            std::fs::File::create(dir.path().join("broker.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut broker = Broker {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                let log = std::fs::read_to_string(broker._dir.path().join("broker.log"))
                    .unwrap_or_default();
                return Err(format!("tansu exited at start ({status}): {log}"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("tansu did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

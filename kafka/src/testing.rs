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
    binary: PathBuf,
    storage: Storage,
    dir: tempfile::TempDir,
}

/// Where a test broker keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, gone when the broker stops.
    Memory,
    /// In a SQLite file in the broker's directory (tansu's `libsql` engine): kept across a
    /// [`Broker::restart`], as a real broker's log is.
    Sqlite,
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
    /// Starts a broker with memory storage, or says what is missing.
    pub fn start() -> Result<Broker, String> {
        Broker::start_with(Storage::Memory)
    }

    /// Starts a broker with the given storage, or says what is missing.
    pub fn start_with(storage: Storage) -> Result<Broker, String> {
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
        let child = spawn(&binary, storage, dir.path(), port)?;
        let mut broker = Broker {
            child,
            port,
            binary,
            storage,
            dir,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
                return Err(format!("tansu exited at start ({status}): {log}"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("tansu did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the broker process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed broker again on the same port; with [`Storage::Sqlite`] its records
    /// are all there.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.child = spawn(&self.binary, self.storage, self.dir.path(), self.port)?;
        self.wait_listening()
    }

    /// `127.0.0.1:PORT`, for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Starts tansu on `port` with its files in `dir`.
fn spawn(
    binary: &PathBuf,
    storage: Storage,
    dir: &std::path::Path,
    port: u16,
) -> Result<Child, String> {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .map_err(|e| e.to_string())?;
    // tansu resolves a SQLite URL's path against its working directory.
    let engine = match storage {
        Storage::Memory => "memory://tansu/",
        Storage::Sqlite => "sqlite://tansu.db",
    };
    Command::new(binary)
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", engine])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

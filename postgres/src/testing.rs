//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a
//! free loopback port, stopped and removed on drop. It uses the server binaries of Debian's
//! `postgresql` package (or `initdb` on `PATH`). PostgreSQL refuses to run as root, so as root
//! the server runs as the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test server.
pub struct PgServer {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    bin: PathBuf,
    root: bool,
}

/// The directory of `initdb` and `postgres`: the newest `/usr/lib/postgresql/*/bin`, or `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).find(|p| p.join("initdb").exists()))
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program` with `args`, as the `postgres` user when we are root.
fn command(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    /// Starts a server, or says what is missing.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL server binaries not found: install Debian's `postgresql` package (.ci/run does)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("eddy-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("cannot hand the data directory to user `postgres`".into());
            }
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-U", "eddy", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = spawn(&bin, root, dir.path(), port)?;
        let mut server = PgServer {
            dir,
            child,
            port,
            bin,
            root,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if postgres::Client::connect(&self.url(), postgres::NoTls).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited at start: {status}"));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("postgres did not accept connections within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server the way a crash would (an immediate shutdown: open connections break,
    /// nothing is checkpointed), keeping its data.
    pub fn crash(&mut self) {
        self.signal("-QUIT");
    }

    /// Whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the server again on the same port and data, after [`PgServer::crash`]; it
    /// recovers from its WAL like a real server does.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.child = spawn(&self.bin, self.root, self.dir.path(), self.port)?;
        self.wait_ready()
    }

    /// Sends `signal` to the postmaster (not to `runuser`) and waits up to 10 s for it to end.
    fn signal(&mut self, signal: &str) {
        let postmaster = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| self.child.id().to_string());
        let _ = Command::new("kill").args([signal, &postmaster]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The connection URL (user `eddy`, database `postgres`, no password).
    pub fn url(&self) -> String {
        format!("postgresql://eddy@127.0.0.1:{}/postgres", self.port)
    }

    /// A new connection.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect to the test server")
    }

    /// Turns TLS on with this certificate and key (PEM files) and refuses plain TCP
    /// connections from then on (the Unix socket stays open).
    pub fn require_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let io = |e: std::io::Error| e.to_string();
        std::fs::copy(cert, data.join("server.crt")).map_err(io)?;
        std::fs::copy(key, data.join("server.key")).map_err(io)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .map_err(io)?;
        }
        if self.root {
            for file in ["server.crt", "server.key", "pg_hba.conf"] {
                let status = Command::new("chown")
                    .arg("postgres:")
                    .arg(data.join(file))
                    .status()
                    .map_err(io)?;
                if !status.success() {
                    return Err(format!("cannot hand {file} to user `postgres`"));
                }
            }
        }
        let mut client = self.client();
        // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a batch.
        for statement in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
            client
                .batch_execute(statement)
                .map_err(|e| format!("{statement}: {e:?}"))?;
        }
        Ok(())
    }

    /// The data directory's parent, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts `postgres` on the data directory under `dir`.
fn spawn(bin: &Path, root: bool, dir: &Path, port: u16) -> Result<Child, String> {
    command(&bin.join("postgres"), root)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args(["-c", "fsync=off", "-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("postgres: {e}"))
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: a fast shutdown that ends the backends too.
        if let Ok(None) = self.child.try_wait() {
            self.signal("-INT");
        }
    }
}

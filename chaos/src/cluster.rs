//! The cluster under test: three `eddy coordinator` processes and N `eddy worker` processes on
//! loopback, each node reaching every other through its own fault-injecting proxy, with the
//! signals and restarts the faults need.

use crate::proxy::{Link, Proxy};
use crate::ChaosError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A node of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Node {
    /// Coordinator with this Raft id (1..=3).
    Coordinator(u64),
    /// Worker with this index (0..N).
    Worker(usize),
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Coordinator(id) => write!(f, "c{id}"),
            Node::Worker(i) => write!(f, "w{i}"),
        }
    }
}

/// A process that exited by itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Crash {
    pub node: Node,
    pub status: String,
    pub log_tail: String,
}

/// How a process is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    /// SIGSTOP'ed: alive, holding its sockets, doing nothing.
    Paused,
    /// Killed (SIGKILL) and not restarted yet.
    Down,
}

struct Process {
    command: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Process {
    fn spawn(&mut self, exe: &Path) -> Result<(), ChaosError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ChaosError::io(&self.log, e))?;
        let child = Command::new(exe)
            .args(&self.command)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| ChaosError::io(exe, e))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on a pid this process spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn state(&mut self) -> ProcessState {
        match &mut self.child {
            None => ProcessState::Down,
            Some(child) => match child.try_wait() {
                Ok(Some(_)) | Err(_) => ProcessState::Down,
                Ok(None) if self.paused => ProcessState::Paused,
                Ok(None) => ProcessState::Running,
            },
        }
    }
}

/// Settings of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `eddy` binary.
    pub exe: PathBuf,
    pub workers: usize,
    pub slots: u32,
    pub dir: PathBuf,
    /// `RUST_LOG` of the nodes.
    pub log_filter: String,
    /// Where each worker's fault file is (`EDDY_FAULTS_FILE`: DIR/w0, DIR/w1, ...).
    pub fault_dir: PathBuf,
    pub seed: u64,
    /// Where jobs may read and write (`--allow-path` of the coordinators and the workers),
    /// besides `dir`.
    pub allow_paths: Vec<PathBuf>,
}

/// The running cluster. Dropping it kills every process.
pub struct Cluster {
    exe: PathBuf,
    processes: BTreeMap<Node, Process>,
    /// Real address of each node (what it listens on).
    pub addrs: BTreeMap<Node, String>,
    /// Where each coordinator serves Prometheus metrics.
    pub metrics: BTreeMap<u64, String>,
    /// The proxy of each directed link (from, to).
    proxies: BTreeMap<(Node, Node), Proxy>,
    /// The CA and the certificates of the nodes and the harness.
    certs: PathBuf,
    /// The admin token the harness made when the cluster first had a leader.
    token: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.processes.values_mut() {
            p.signal(libc::SIGCONT);
            p.kill();
        }
    }
}

/// A free loopback port (bound and released: a race with other processes is possible but
/// harmless in practice; the harness fails clearly if a node cannot bind).
pub fn free_port() -> Result<u16, ChaosError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ChaosError::Setup(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ChaosError::Setup(format!("no free port: {e}")))
}

impl Cluster {
    /// Starts proxies and processes, and waits until every worker registered with a leader.
    pub async fn start(config: &ClusterConfig) -> Result<Cluster, ChaosError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| ChaosError::io(&config.dir, e))?;
        let mut addrs = BTreeMap::new();
        let mut nodes: Vec<Node> = (1..=3).map(Node::Coordinator).collect();
        nodes.extend((0..config.workers).map(Node::Worker));
        for &n in &nodes {
            addrs.insert(n, format!("127.0.0.1:{}", free_port()?));
        }
        let mut proxies = BTreeMap::new();
        for &from in &nodes {
            for &to in &nodes {
                if from != to {
                    let seed = config.seed ^ (proxies.len() as u64) << 32;
                    let proxy = Proxy::start(addrs[&to].clone(), seed)
                        .await
                        .map_err(|e| ChaosError::Setup(format!("cannot start a proxy: {e}")))?;
                    proxies.insert((from, to), proxy);
                }
            }
        }
        let metrics: BTreeMap<u64, String> = (1..=3)
            .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
            .collect::<Result<_, ChaosError>>()?;
        let peers: Vec<String> = (1..=3)
            .map(|id| format!("{id}={}", addrs[&Node::Coordinator(id)]))
            .collect();
        let coordinators: Vec<String> = (1..=3)
            .map(|id| addrs[&Node::Coordinator(id)].clone())
            .collect();
        // Mutual TLS between every pair of nodes and with the harness, as a cluster runs by
        // default (the proxies pass the encrypted bytes through).
        let certs = config.dir.join("certs");
        if !certs.join("ca/ca.pem").exists() {
            let specs = eddy_security::certs::default_nodes(config.workers as u32, &[], &[])
                .map_err(|e| ChaosError::Setup(format!("certificates: {e}")))?;
            eddy_security::certs::init(&certs, &specs)
                .map_err(|e| ChaosError::Setup(format!("certificates: {e}")))?;
        }
        eddy_proto::net::use_tls(&certs.join("client"))
            .map_err(|e| ChaosError::Setup(format!("certificates: {e}")))?;
        let mut processes = BTreeMap::new();
        for &node in &nodes {
            let routes: Vec<String> = nodes
                .iter()
                .filter(|&&to| to != node)
                .map(|to| format!("{}={}", addrs[to], proxies[&(node, *to)].listen))
                .collect();
            let mut env = vec![
                (eddy_proto::net::ROUTES_ENV.to_string(), routes.join(",")),
                ("RUST_LOG".to_string(), config.log_filter.clone()),
            ];
            let dir = config.dir.join(node.to_string());
            let command: Vec<String> = match node {
                Node::Coordinator(id) => {
                    let mut command: Vec<String> = vec![
                        "coordinator".into(),
                        "--id".into(),
                        id.to_string(),
                        "--listen".into(),
                        addrs[&node].clone(),
                        "--peers".into(),
                        peers.join(","),
                        "--worker-timeout".into(),
                        "1500ms".into(),
                        "--metrics".into(),
                        metrics[&id].clone(),
                        "--tls-dir".into(),
                        certs
                            .join(format!("coordinator-{id}"))
                            .display()
                            .to_string(),
                        "--data-dir".into(),
                        dir.display().to_string(),
                    ];
                    for p in std::iter::once(&config.dir).chain(&config.allow_paths) {
                        command.push("--allow-path".into());
                        command.push(p.display().to_string());
                    }
                    command
                }
                Node::Worker(i) => {
                    env.push((
                        eddy_runtime::faults::FAULTS_ENV.to_string(),
                        config
                            .fault_dir
                            .join(node.to_string())
                            .display()
                            .to_string(),
                    ));
                    let mut command: Vec<String> = vec![
                        "worker".into(),
                        "--coordinators".into(),
                        coordinators.join(","),
                        "--listen".into(),
                        addrs[&node].clone(),
                        "--slots".into(),
                        config.slots.to_string(),
                        "--heartbeat".into(),
                        "200ms".into(),
                        "--tls-dir".into(),
                        certs
                            .join(format!("worker-{}", i + 1))
                            .display()
                            .to_string(),
                        "--data-dir".into(),
                        dir.display().to_string(),
                    ];
                    // Workers check deployments against the same roots.
                    for p in std::iter::once(&config.dir).chain(&config.allow_paths) {
                        command.push("--allow-path".into());
                        command.push(p.display().to_string());
                    }
                    command
                }
            };
            let mut process = Process {
                command,
                env,
                log: config.dir.join(format!("{node}.log")),
                child: None,
                paused: false,
            };
            process.spawn(&config.exe)?;
            processes.insert(node, process);
        }
        let mut cluster = Cluster {
            exe: config.exe.clone(),
            processes,
            addrs,
            metrics,
            proxies,
            certs,
            token: String::new(),
        };
        cluster.token = cluster.bootstrap_token().await?;
        Ok(cluster)
    }

    /// The client certificate directory for `eddy` commands against this cluster
    /// (`EDDY_TLS_DIR`).
    pub fn client_tls_dir(&self) -> PathBuf {
        self.certs.join("client")
    }

    /// The admin token for `eddy` commands against this cluster (`EDDY_TOKEN`); this process's
    /// calls already carry it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Makes the cluster's first admin token once it has a leader, and has this process's
    /// client API calls carry it.
    async fn bootstrap_token(&self) -> Result<String, ChaosError> {
        let client = eddy_proto::leader::Coordinators::new(self.coordinator_addrs());
        let request = eddy_proto::v1::CreateTokenRequest {
            name: "admin".into(),
            role: "admin".into(),
            bootstrap: true,
            valid_for_ms: 0,
        };
        let token = client
            .call(Duration::from_secs(60), |c| {
                let r = request.clone();
                async move { eddy_proto::net::client_api(c).create_token(r).await }
            })
            .await
            .map_err(|e| ChaosError::Cluster(format!("no admin token: {}", e.message())))?
            .into_inner()
            .token;
        eddy_proto::net::use_token(&token)
            .map_err(|e| ChaosError::Setup(format!("the admin token: {e}")))?;
        Ok(token)
    }

    /// The coordinators' client addresses (direct, not through proxies).
    pub fn coordinator_addrs(&self) -> Vec<String> {
        (1..=3)
            .map(|id| self.addrs[&Node::Coordinator(id)].clone())
            .collect()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<Node> {
        self.processes.keys().copied().collect()
    }

    pub fn workers(&self) -> Vec<Node> {
        self.nodes()
            .into_iter()
            .filter(|n| matches!(n, Node::Worker(_)))
            .collect()
    }

    pub fn state(&mut self, node: Node) -> ProcessState {
        self.processes
            .get_mut(&node)
            .map_or(ProcessState::Down, Process::state)
    }

    /// SIGKILL.
    pub fn kill(&mut self, node: Node) {
        if let Some(p) = self.processes.get_mut(&node) {
            p.signal(libc::SIGCONT);
            p.kill();
        }
    }

    /// Starts a killed node again, with its data directory as it was.
    pub fn restart(&mut self, node: Node) -> Result<(), ChaosError> {
        let exe = self.exe.clone();
        match self.processes.get_mut(&node) {
            Some(p) => match p.state() {
                ProcessState::Down => p.spawn(&exe),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Restarts every process that exited without the harness killing it, as a supervisor
    /// (systemd, Kubernetes) would, and returns what it found: the node, how it ended and
    /// the last lines of its log.
    pub fn reap(&mut self) -> Vec<Crash> {
        let exe = self.exe.clone();
        let mut crashes = Vec::new();
        for (node, p) in self.processes.iter_mut() {
            let Some(child) = p.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            crashes.push(Crash {
                node: *node,
                status: status.to_string(),
                log_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
            p.child = None;
            if let Err(e) = p.spawn(&exe) {
                tracing::error!(%node, error = %e, "cannot restart a crashed process");
            }
        }
        crashes
    }

    /// SIGSTOP.
    pub fn pause(&mut self, node: Node) {
        if let Some(p) = self.processes.get_mut(&node) {
            if p.state() == ProcessState::Running {
                p.signal(libc::SIGSTOP);
                p.paused = true;
            }
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, node: Node) {
        if let Some(p) = self.processes.get_mut(&node) {
            p.signal(libc::SIGCONT);
            p.paused = false;
        }
    }

    /// Sends SIGHUP to `node` (it loads its certificates again).
    pub fn hangup(&self, node: Node) {
        if let Some(p) = self.processes.get(&node) {
            p.signal(libc::SIGHUP);
        }
    }

    /// The log file of `node`.
    pub fn log(&self, node: Node) -> Option<&Path> {
        self.processes.get(&node).map(|p| p.log.as_path())
    }

    /// The link carrying what `from` sends to `to`.
    pub fn link(&self, from: Node, to: Node) -> Option<&Link> {
        self.proxies.get(&(from, to)).map(|p| &p.link)
    }

    /// Every link, for healing all at once.
    pub fn links(&self) -> impl Iterator<Item = (&(Node, Node), &Link)> {
        self.proxies.iter().map(|(k, p)| (k, &p.link))
    }
}

/// The Prometheus text served at `addr`, if it answers within `timeout`.
pub async fn scrape(addr: &str, timeout: Duration) -> Option<String> {
    let addr = addr.to_string();
    {
        let fetch = async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            s.write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).await.ok()?;
            text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
        };
        tokio::time::timeout(timeout, fetch).await.ok().flatten()
    }
}

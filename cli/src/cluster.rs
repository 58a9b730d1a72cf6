//! The cluster subcommands: run a coordinator or a worker, start a whole local cluster, and
//! the client commands that talk to the coordinators over gRPC.

use clap::Args;
use eddy_coordinator::leader::LeaderOptions;
use eddy_coordinator::raft::RaftOptions;
use eddy_coordinator::CoordinatorConfig;
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::*;
use eddy_security::paths::AllowedPaths;
use eddy_worker::WorkerConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where the coordinators are, for every client command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Coordinator addresses (any subset works; the leader is found), comma-separated.
    #[arg(
        long,
        env = "EDDY_COORDINATORS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub coordinators: Vec<String>,
    /// Give up after this long without an answer from a leader (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_interval)]
    pub timeout: Duration,
    /// A client certificate directory, for a cluster that runs with TLS (`eddy certs init DIR`
    /// makes DIR/client; `eddy local` prints its own).
    #[arg(long, env = "EDDY_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Without a client certificate: the cluster's CA certificate (PEM, e.g. DIR/client/ca.pem)
    /// to check the coordinators against. Only their --client-listen ports take such a
    /// client, with a token.
    #[arg(long, env = "EDDY_CA", value_name = "PEM", conflicts_with = "tls_dir")]
    pub ca: Option<PathBuf>,
    /// The bearer token for a cluster that runs with TLS (`eddy token create`; `eddy local`
    /// prints an admin token). Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "EDDY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// How a coordinator or worker protects its connections: exactly one of the two.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct NodeSecurity {
    /// This node's certificate directory (`eddy certs init DIR` makes DIR/coordinator-1,
    /// DIR/worker-1, ...): mutual TLS with every peer and client; reloaded on SIGHUP.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Run without TLS: whoever reaches this node's port can submit jobs, read their
    /// parameters and pose as a node. Only on a network you trust completely.
    #[arg(long)]
    pub insecure: bool,
}

impl NodeSecurity {
    /// Sets up this process's transport for a node of `role`; with TLS, reloads the
    /// certificates on SIGHUP. Call inside the runtime.
    fn apply(&self, role: eddy_security::Role) -> anyhow::Result<()> {
        let Some(dir) = &self.tls_dir else {
            tracing::warn!(
                "running without TLS (--insecure): anyone who reaches this node's port can control the cluster"
            );
            return Ok(());
        };
        let me = eddy_proto::net::use_tls(dir)?;
        if !me.roles.contains(&role) {
            anyhow::bail!(
                "the certificate in {} is `{}` (roles: {:?}); a {role} needs a {role} certificate (eddy certs issue DIR --node NAME --role {role})",
                dir.display(),
                me.name,
                me.roles
            );
        }
        let dir = dir.clone();
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match eddy_proto::net::use_tls(&dir) {
                    Ok(me) => {
                        tracing::info!(dir = %dir.display(), name = %me.name, "certificates reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "certificates not reloaded; the old ones stay in use")
                    }
                }
            }
        });
        Ok(())
    }
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// This node's id in --peers.
    #[arg(long)]
    pub id: u64,
    /// Where to listen for clients, workers and the other coordinators (HOST:PORT).
    #[arg(long)]
    pub listen: String,
    /// Serve the client API on this address (HOST:PORT) instead of --listen, which then
    /// serves only Raft and the workers: clients reach one port, the cluster another.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_listen: Option<String>,
    /// Every coordinator: ID=HOST:PORT, comma-separated (this one included).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, required = true)]
    pub peers: Vec<(u64, String)>,
    /// Where the Raft log and snapshots are kept (a restarted node catches up from here).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Declare a worker lost after this long without a heartbeat.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = crate::parse_interval)]
    pub worker_timeout: Duration,
    #[command(flatten)]
    pub security: NodeSecurity,
    /// The key of secret job parameters (default: secrets.key in --tls-dir, which `eddy
    /// certs init` puts there); without one, secret parameters are refused.
    #[arg(long, value_name = "FILE")]
    pub secrets_key: Option<PathBuf>,
    /// A directory jobs may read and write under (repeat for several): a submission whose
    /// input, output, checkpoint or savepoint path lies elsewhere is refused. Default with
    /// TLS: the data directory only; with --insecure: anywhere.
    #[arg(long, value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Coordinator addresses, comma-separated.
    #[arg(
        long,
        env = "EDDY_COORDINATORS",
        value_delimiter = ',',
        required = true
    )]
    pub coordinators: Vec<String>,
    /// Where to listen for the leader and other workers (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Task slots: a job at parallelism P takes P slots (subtask i of every task in slot i).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub slots: u32,
    /// Local state (RocksDB) and dead letters.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// A directory deployed jobs may read and write (repeat for several; in the environment,
    /// separated by `:`), checked at every deployment besides the coordinators' check at
    /// submission; default: whatever the coordinators allow.
    #[arg(
        long,
        value_name = "DIR",
        env = "EDDY_WORKER_ALLOW_PATHS",
        value_delimiter = ':'
    )]
    pub allow_path: Vec<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Time between heartbeats.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = crate::parse_interval)]
    pub heartbeat: Duration,
    #[command(flatten)]
    pub security: NodeSecurity,
}

#[derive(Args)]
pub struct LocalArgs {
    /// Worker processes to start (each in this process, on its own port).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Port of coordinator 1 (2 and 3 take the next ones); 0: any free ports.
    #[arg(long, default_value_t = 7001)]
    pub port: u16,
    /// Where the cluster keeps its data (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Also run the e-commerce analytics: a Kafka broker (tansu), a PostgreSQL warehouse, the
    /// ingest API and dashboard on --http, and jobs/ecommerce/analytics.toml on the cluster.
    #[arg(long)]
    pub ecommerce: bool,
    /// With --ecommerce: where the ingest API and the dashboard listen.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080",
        requires = "ecommerce"
    )]
    pub http: String,
    /// With --ecommerce: a Kafka broker to use instead of starting one.
    #[arg(long, value_name = "HOST:PORT", requires = "ecommerce")]
    pub kafka: Option<String>,
    /// With --ecommerce: a PostgreSQL warehouse to use instead of starting one.
    #[arg(long, value_name = "URL", requires = "ecommerce")]
    pub warehouse: Option<String>,
    /// With --ecommerce: also generate shop traffic at this many events per second.
    #[arg(long, value_name = "EVENTS_PER_SEC", requires = "ecommerce")]
    pub generate: Option<f64>,
    /// Run without TLS (by default the cluster makes its own CA and certificates in its data
    /// directory, and clients use DATA/certs/client).
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: crate::JobArgs,
    /// Checkpoint every DURATION (exactly-once output); without it, no checkpoints.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_interval)]
    pub checkpoint_interval: Option<Duration>,
    /// Where checkpoints go; every worker and coordinator must reach it (default: under the
    /// leader's data directory).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Completed checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    pub retain_checkpoints: u32,
    /// Fill a `${NAME}` placeholder with a secret (a password, a URL that holds one): sealed
    /// with the cluster's key at rest, never shown or logged; repeat for several.
    #[arg(long = "secret-param", value_name = "NAME=VALUE", value_parser = crate::parse_param)]
    pub secret_params: Vec<(String, String)>,
    /// Start from the latest savepoint in DIR (written by `eddy savepoint` or `eddy run
    /// --savepoint-dir`), e.g. to move a job between a cluster and a single process or to
    /// change its parallelism; every worker and coordinator must reach DIR.
    #[arg(long, value_name = "DIR")]
    pub from_savepoint: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct JobIdArgs {
    /// The job id `eddy submit` printed (e.g. job-1).
    pub job: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub id: JobIdArgs,
    /// Wait until the job finished, failed or was cancelled (exit 0 only if it finished).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::parse_interval)]
    pub wait_timeout: Duration,
}

#[derive(Args)]
pub struct SavepointArgs {
    #[command(flatten)]
    pub id: JobIdArgs,
    /// Where to write it (default: `savepoints/` in the job's checkpoint directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Stop the job once the savepoint is written.
    #[arg(long)]
    pub stop: bool,
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not ID=HOST:PORT (e.g. 1=127.0.0.1:7001)"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("`{id}` in `{text}` is not a node id (a positive number)"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    Ok((id, addr.trim().to_string()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn install_metrics(addr: &Option<String>) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--metrics `{addr}`: {e} (expected HOST:PORT)"))?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| anyhow::anyhow!("cannot serve metrics at {addr}: {e}"))?;
    }
    Ok(())
}

/// Completes at the first Ctrl-C or SIGTERM.
pub(crate) async fn until_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        args.security.apply(eddy_security::Role::Coordinator)?;
        install_metrics(&args.metrics)?;
        let peers: BTreeMap<u64, String> = args.peers.into_iter().collect();
        let allowed_paths = match (&args.allow_path[..], args.security.insecure) {
            ([], true) => None,
            ([], false) => {
                std::fs::create_dir_all(&args.data_dir)?;
                Some(AllowedPaths::new(std::slice::from_ref(&args.data_dir))?)
            }
            (roots, _) => Some(AllowedPaths::new(roots)?),
        };
        let key_file = args.secrets_key.clone().or_else(|| {
            let default = args.security.tls_dir.as_ref()?.join("secrets.key");
            default.exists().then_some(default)
        });
        let secrets = key_file
            .map(|f| eddy_security::secrets::SecretKey::load(&f))
            .transpose()?;
        let node = eddy_coordinator::start(CoordinatorConfig {
            allowed_paths,
            id: args.id,
            listen: args.listen.clone(),
            client_listen: args.client_listen.clone(),
            peers,
            data_dir: args.data_dir,
            raft: RaftOptions::default(),
            leader: LeaderOptions {
                worker_timeout: args.worker_timeout,
                secrets,
                ..LeaderOptions::default()
            },
        })
        .await?;
        eprintln!("coordinator {} listening on {}", args.id, args.listen);
        until_signal().await;
        node.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        args.security.apply(eddy_security::Role::Worker)?;
        install_metrics(&args.metrics)?;
        let worker = eddy_worker::start(WorkerConfig {
            coordinators: args.coordinators,
            listen: args.listen,
            slots: args.slots,
            data_dir: args.data_dir,
            heartbeat: args.heartbeat,
            allowed_paths: match &args.allow_path[..] {
                [] => None,
                roots => Some(AllowedPaths::new(roots)?),
            },
        })
        .await?;
        eprintln!(
            "worker listening on {} with {} slots",
            worker.addr, args.slots
        );
        until_signal().await;
        worker.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The certificates of `eddy local` in `data/certs` (made on its first start): every node of
/// this process uses `local` (all roles: the three coordinators and the workers share the
/// process), clients `client`. Returns the client's directory.
fn local_certs(data: &Path) -> anyhow::Result<PathBuf> {
    use eddy_security::certs::{self, NodeSpec};
    use eddy_security::Role;
    let dir = data.join("certs");
    if !dir.join("local/node.pem").exists() {
        let localhost = vec!["localhost".to_string()];
        let loopback = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        if !dir.join("ca/ca.pem").exists() {
            let client = NodeSpec::named("client", vec![], vec![], vec![])?;
            certs::init(&dir, &[client])?;
        }
        let local = NodeSpec::named("local", Role::ALL.to_vec(), localhost, loopback)?;
        certs::issue(&dir, &local)?;
    }
    eddy_proto::net::use_tls(&dir.join("local"))?;
    Ok(dir.join("client"))
}

/// The admin token of `eddy local`: made at its first start (the bootstrap token) and kept in
/// `data/certs/admin.token` (readable by its owner only), so a restart prints the same one.
async fn local_token(coordinators: &[String], data: &Path) -> anyhow::Result<String> {
    let path = data.join("certs/admin.token");
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let client = ClientArgs {
                coordinators: coordinators.to_vec(),
                timeout: Duration::from_secs(30),
                tls_dir: None,
                ca: None,
                token: None,
            };
            let token = create_token(&client, "admin", "admin", true, None)
                .await
                .map_err(|e| anyhow::anyhow!("cannot make the admin token: {e}"))?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            std::io::Write::write_all(&mut f, token.as_bytes())?;
            token
        }
    };
    eddy_proto::net::use_token(&token)?;
    Ok(token)
}

/// Wall-clock milliseconds since the epoch, as the coordinators stamp tokens and audit records.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Picks `n` free loopback ports (or `base`, `base+1`, ... when base is not 0).
fn ports(base: u16, n: u16) -> anyhow::Result<Vec<u16>> {
    if base != 0 {
        return Ok((0..n).map(|i| base + i).collect());
    }
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

pub fn local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let temp;
    let data = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("eddy-local-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let client_tls = match args.insecure {
        true => {
            tracing::warn!("running without TLS (--insecure)");
            None
        }
        false => Some(local_certs(&data)?),
    };
    let local_secrets = match args.insecure {
        true => None,
        false => Some(eddy_security::secrets::SecretKey::load(
            &data.join("certs/ca/secrets.key"),
        )?),
    };
    // Jobs of a local cluster read and write under its data directory and where it runs.
    let allowed_paths = match args.insecure {
        true => None,
        false => {
            std::fs::create_dir_all(&data)?;
            Some(AllowedPaths::new(&[
                data.clone(),
                std::env::current_dir()?,
            ])?)
        }
    };
    rt.block_on(async {
        install_metrics(&args.metrics)?;
        let ports = ports(args.port, 3)?;
        let peers: BTreeMap<u64, String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
            .collect();
        let mut nodes = Vec::new();
        for (id, addr) in &peers {
            nodes.push(
                eddy_coordinator::start(CoordinatorConfig {
                    allowed_paths: allowed_paths.clone(),
                    id: *id,
                    listen: addr.clone(),
                    client_listen: None,
                    peers: peers.clone(),
                    data_dir: data.join(format!("coordinator-{id}")),
                    raft: RaftOptions::default(),
                    leader: LeaderOptions {
                        secrets: local_secrets.clone(),
                        ..LeaderOptions::default()
                    },
                })
                .await?,
            );
        }
        let coordinators: Vec<String> = peers.values().cloned().collect();
        let mut workers = Vec::new();
        for i in 0..args.workers {
            workers.push(
                eddy_worker::start(WorkerConfig {
                    coordinators: coordinators.clone(),
                    listen: "127.0.0.1:0".into(),
                    slots: args.slots,
                    data_dir: data.join(format!("worker-{}", i + 1)),
                    heartbeat: Duration::from_millis(500),
                    allowed_paths: allowed_paths.clone(),
                })
                .await?,
            );
        }
        eprintln!(
            "local cluster: 3 coordinators at {} and {} workers ({} slots each); data in {}",
            coordinators.join(","),
            args.workers,
            args.slots,
            data.display()
        );
        let tls_env = match &client_tls {
            Some(dir) => {
                let token = local_token(&coordinators, &data).await?;
                format!("EDDY_TLS_DIR={} EDDY_TOKEN={token} ", dir.display())
            }
            None => String::new(),
        };
        eprintln!(
            "submit with: {tls_env}EDDY_COORDINATORS={} eddy submit jobs/nexmark/q5.toml --generate 100000 --param output=out/q5/ --checkpoint-interval 1s",
            coordinators.join(",")
        );
        println!("{}", coordinators.join(","));
        let shop = if args.ecommerce {
            Some(Shop::start(&args, &coordinators, &data).await?)
        } else {
            None
        };
        until_signal().await;
        drop(shop);
        for w in workers {
            w.shutdown().await;
        }
        for n in nodes {
            n.shutdown().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What `eddy local --ecommerce` runs beside the cluster; stopped on drop.
struct Shop {
    _broker: Option<eddy_kafka::testing::Broker>,
    _warehouse: Option<eddy_postgres::testing::PgServer>,
    generator: Option<std::process::Child>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Shop {
    async fn start(args: &LocalArgs, coordinators: &[String], data: &Path) -> anyhow::Result<Shop> {
        use anyhow::Context;
        let (broker, kafka) = match &args.kafka {
            Some(k) => (None, k.clone()),
            None => {
                let b = eddy_kafka::testing::Broker::start().map_err(|e| {
                    anyhow::anyhow!("cannot start a Kafka broker: {e} (or give --kafka)")
                })?;
                let address = b.address();
                (Some(b), address)
            }
        };
        let (pg, warehouse) = match &args.warehouse {
            Some(w) => (None, w.clone()),
            None => {
                let server = tokio::task::spawn_blocking(eddy_postgres::testing::PgServer::start)
                    .await?
                    .map_err(|e| {
                        anyhow::anyhow!("cannot start PostgreSQL: {e} (or give --warehouse)")
                    })?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let url = warehouse.clone();
        tokio::task::spawn_blocking(move || {
            eddy_postgres::migrate::migrate(&url, &crate::warehouse::migrations())
        })
        .await??;
        let partitions = (args.workers as i32).max(1) * 2;
        // A producer key for the generator and for whoever sends events by hand.
        let keys = data.join("api-keys.toml");
        let mut key_file = eddy_ingest::access::KeyFile::load(&keys, true)?;
        key_file.revoke("local");
        let ingest_key = key_file.create("local", eddy_ingest::access::KeyRole::Producer, None)?;
        key_file.save(&keys)?;
        let serve = crate::serve::ServeArgs::local(
            args.http.clone(),
            kafka.clone(),
            warehouse.clone(),
            partitions,
            keys,
        );
        let server = crate::serve::Server::start(&serve, None).await?;
        let http = server.url.clone();
        let task = tokio::spawn(server.run(until_signal()));
        let request = SubmitRequest {
            job_text: eddy_jobs::ecommerce::ANALYTICS_JOB.to_string(),
            job_path: "jobs/ecommerce/analytics.toml".into(),
            params: [("brokers".to_string(), kafka.clone())]
                .into_iter()
                .collect(),
            // The warehouse URL holds its password: sealed at rest unless --insecure.
            secret_params: match args.insecure {
                false => [("warehouse".to_string(), warehouse.clone())]
                    .into_iter()
                    .collect(),
                true => Default::default(),
            },
            parallelism: args.workers,
            checkpoint_interval_ms: 1000,
            checkpoint_dir: data.join("ecommerce-checkpoints").display().to_string(),
            retain_checkpoints: 3,
            ..SubmitRequest::default()
        };
        let mut request = request;
        if args.insecure {
            request.params.insert("warehouse".into(), warehouse.clone());
        }
        let client = ClientArgs {
            coordinators: coordinators.to_vec(),
            timeout: Duration::from_secs(30),
            // The process already talks TLS as the local node, with its admin token.
            tls_dir: None,
            ca: None,
            token: None,
        };
        let job = call(&client, |mut c| {
            let r = request.clone();
            async move { c.submit(r).await }
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot submit the e-commerce job: {e}"))?
        .job_id;
        let generator = match args.generate {
            Some(rate) => Some(
                std::process::Command::new(std::env::current_exe()?)
                    .args([
                        "gen",
                        "ecommerce",
                        "--rate",
                        &rate.to_string(),
                        "--to",
                        &http,
                    ])
                    .env("EDDY_INGEST_KEY", &ingest_key)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .context("cannot start the generator")?,
            ),
            None => None,
        };
        eprintln!(
            "e-commerce: job {job} reads Kafka at {kafka} and writes the warehouse {}",
            eddy_postgres::redact(&warehouse)
        );
        eprintln!("dashboard: {http}/");
        eprintln!(
            "send events: EDDY_INGEST_KEY={ingest_key} eddy gen ecommerce --rate 20000 --to {http}"
        );
        Ok(Shop {
            _broker: broker,
            _warehouse: pg,
            generator,
            server: task,
        })
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        if let Some(g) = self.generator.as_mut() {
            let _ = g.kill();
            let _ = g.wait();
        }
        self.server.abort();
    }
}

/// Runs one client call against the leader, with the retries and deadline of `args`.
async fn call<T, F, Fut>(args: &ClientArgs, f: F) -> Result<T, String>
where
    F: Fn(eddy_proto::net::ClientApi) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    if let Some(dir) = &args.tls_dir {
        eddy_proto::net::use_tls(dir).map_err(|e| e.to_string())?;
    } else if let Some(ca) = &args.ca {
        eddy_proto::net::use_ca(ca).map_err(|e| e.to_string())?;
    }
    if let Some(token) = &args.token {
        eddy_proto::net::use_token(token).map_err(|e| e.to_string())?;
    }
    let coordinators = Coordinators::new(args.coordinators.clone());
    coordinators
        .call(args.timeout, |c| f(eddy_proto::net::client_api(c)))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => format!(
                "no coordinator leader answered within {:?} (tried {}): {}{}",
                args.timeout,
                args.coordinators.join(", "),
                s.message(),
                match (&args.tls_dir, &args.ca) {
                    (None, None) => " (a cluster that runs with TLS needs a client certificate: EDDY_TLS_DIR=DIR/client, from `eddy certs init DIR`)",
                    (None, Some(_)) => " (without a client certificate, only a coordinator's --client-listen port answers)",
                    _ => "",
                }
            ),
            // A plaintext client that reached a TLS server sees a broken HTTP/2 connection.
            tonic::Code::Unknown | tonic::Code::Internal
                if args.tls_dir.is_none()
                    && args.ca.is_none()
                    && s.message().contains("h2 protocol error") =>
            {
                format!(
                    "{} (the cluster runs with TLS: give a client certificate with EDDY_TLS_DIR=DIR/client, from `eddy certs init DIR`)",
                    s.message()
                )
            }
            // A coordinator that serves its client API on --client-listen has none here.
            tonic::Code::Unimplemented => format!(
                "{} does not serve the client API: give the coordinators' --client-listen addresses in EDDY_COORDINATORS{}",
                args.coordinators.join(", "),
                match s.message() {
                    "" => String::new(),
                    m => format!(" ({m})"),
                }
            ),
            _ => s.message().to_string(),
        })
}

fn fail(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {}", message.lines().collect::<Vec<_>>().join("; "));
    Ok(ExitCode::from(1))
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let secret_names: Vec<String> = args.secret_params.iter().map(|(n, _)| n.clone()).collect();
    // Workers write where the path says, whatever their working directory.
    let mut job = args.job.clone();
    job.sink_dir = job.sink_dir.map(|d| std::path::absolute(&d).unwrap_or(d));
    let read = |parts: bool| crate::read_job(&job, parts, &secret_names);
    let source = match read(args.checkpoint_interval.is_some()).and_then(|s| {
        // A script's SET of a checkpoint interval makes this a run with checkpoints too.
        match &s.sql {
            Some(sql)
                if sql.settings.checkpoint_interval_ms.is_some()
                    && args.checkpoint_interval.is_none() =>
            {
                read(true)
            }
            _ => Ok(s),
        }
    }) {
        Ok(s) => s,
        Err(crate::BadJob(message)) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    let settings = source
        .sql
        .as_ref()
        .map(|s| s.settings.clone())
        .unwrap_or_default();
    if source.sql.as_ref().is_some_and(|s| s.sinks == 0) {
        for plan in source.sql.iter().flat_map(|s| &s.explained) {
            println!("{plan}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let checkpoint_interval = args
        .checkpoint_interval
        .or(settings.checkpoint_interval_ms.map(Duration::from_millis));
    let absolute = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    let request = SubmitRequest {
        job_text: source.text,
        job_path: source.path,
        params: source.params.into_iter().collect(),
        secret_params: args.secret_params.iter().cloned().collect(),
        parallelism: args.job.parallelism.or(settings.parallelism).unwrap_or(0),
        checkpoint_interval_ms: checkpoint_interval.map_or(0, |d| d.as_millis() as u64),
        checkpoint_dir: args
            .checkpoint_dir
            .as_ref()
            .map(absolute)
            .unwrap_or_default(),
        generate_events: args.job.generate.unwrap_or(0),
        generate_rate: args.job.rate,
        topics_from: args
            .job
            .topics_from
            .as_ref()
            .map(absolute)
            .unwrap_or_default(),
        retain_checkpoints: args.retain_checkpoints,
        max_source_rate: args.job.max_rate.unwrap_or(0),
        from_savepoint: args
            .from_savepoint
            .as_ref()
            .map(absolute)
            .unwrap_or_default(),
    };
    if request.checkpoint_interval_ms > 0 && request.checkpoint_dir.is_empty() {
        // A new leader (or a worker) on another host would not find them there.
        eprintln!(
            "note: without --checkpoint-dir the checkpoints go under the leader's data directory; \
             when coordinators and workers run on several hosts, give a directory on storage they all reach"
        );
    }
    let rt = runtime()?;
    match rt.block_on(call(&args.client, |mut c| {
        let r = request.clone();
        async move { c.submit(r).await }
    })) {
        Ok(r) => {
            println!("{}", r.job_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.starts_with("no coordinator") => fail(e),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

pub fn list(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match rt.block_on(call(&args, |mut c| async move {
        c.list_jobs(ListJobsRequest {}).await
    })) {
        Ok(r) => {
            println!("leader: {}", r.leader);
            for j in r.jobs {
                println!(
                    "{}\t{}\t{}\tparallelism {}\tattempt {}{}",
                    j.job_id,
                    j.name,
                    j.state,
                    j.parallelism,
                    j.attempt,
                    if j.message.is_empty() {
                        String::new()
                    } else {
                        format!("\t{}", j.message)
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(e),
    }
}

fn print_status(s: &JobStatusResponse) {
    let Some(job) = &s.job else { return };
    println!(
        "{} {}: {}{}",
        job.job_id,
        job.name,
        job.state,
        if job.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", job.message)
        }
    );
    println!("leader: {}", s.leader);
    println!(
        "attempt: {} ({} restarts), parallelism {}",
        job.attempt, s.restarts, job.parallelism
    );
    if s.last_checkpoint > 0 {
        println!("last checkpoint: {}", s.last_checkpoint);
    } else {
        println!("last checkpoint: none");
    }
    println!("records in: {}, out: {}", s.records_in, s.records_out);
    if !s.tasks.is_empty() {
        println!("tasks:");
        for t in &s.tasks {
            println!(
                "  {}[{}] on worker {} ({}): {}, in {}, out {}",
                t.name, t.subtask, t.worker, t.worker_addr, t.state, t.records_in, t.records_out
            );
        }
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let started = Instant::now();
    loop {
        let request = JobStatusRequest {
            job_id: args.id.job.clone(),
        };
        let s = match rt.block_on(call(&args.id.client, |mut c| {
            let r = request.clone();
            async move { c.job_status(r).await }
        })) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let state = s.job.as_ref().map(|j| j.state.clone()).unwrap_or_default();
        let terminal = matches!(state.as_str(), "finished" | "cancelled" | "failed");
        if !args.wait || terminal {
            print_status(&s);
            return Ok(if args.wait && state != "finished" {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        if started.elapsed() > args.wait_timeout {
            print_status(&s);
            return fail(format!(
                "{} did not end within {:?}",
                args.id.job, args.wait_timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn cancel(args: JobIdArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let request = CancelRequest {
        job_id: args.job.clone(),
    };
    match rt.block_on(call(&args.client, |mut c| {
        let r = request.clone();
        async move { c.cancel(r).await }
    })) {
        Ok(_) => {
            println!("{} cancelled", args.job);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(e),
    }
}

pub fn savepoint(args: SavepointArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let request = SavepointRequest {
        job_id: args.id.job.clone(),
        dir: args
            .dir
            .as_ref()
            .map(|d| {
                std::path::absolute(d)
                    .unwrap_or_else(|_| d.clone())
                    .display()
                    .to_string()
            })
            .unwrap_or_default(),
        stop: args.stop,
    };
    let mut client = args.id.client.clone();
    client.timeout = client.timeout.max(Duration::from_secs(130));
    match rt.block_on(call(&client, |mut c| {
        let r = request.clone();
        async move { c.savepoint(r).await }
    })) {
        Ok(r) => {
            println!("savepoint {} in {}", r.checkpoint, r.location);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(e),
    }
}

pub fn workers(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match rt.block_on(call(&args, |mut c| async move {
        c.list_workers(ListWorkersRequest {}).await
    })) {
        Ok(r) => {
            for w in r.workers {
                println!(
                    "worker {}\t{}\tslots {}/{} used\tlast heartbeat {} ms ago",
                    w.id, w.addr, w.slots_used, w.slots, w.last_heartbeat_ms_ago
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make the cluster's first admin token (named `admin`); refused once any token exists.
    Bootstrap(ClientArgs),
    /// Make a token; prints it once (the cluster keeps only its hash).
    Create(TokenCreateArgs),
    /// Revoke a token by name: calls with it are refused from now on.
    Revoke(TokenNameArgs),
    /// List the tokens: name, role, created, revoked.
    List(ClientArgs),
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// Its name (letters, digits, `-`, `_`), shown in the coordinators' logs for what it does.
    #[arg(long)]
    pub name: String,
    /// viewer (list, status), operator (also submit, cancel, savepoint) or admin (also tokens).
    #[arg(long, value_parser = ["viewer", "operator", "admin"])]
    pub role: String,
    /// It stops working after this long (e.g. 30d, 12h); default: never.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_interval)]
    pub valid_for: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct TokenNameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let result = match command {
            TokenCommand::Bootstrap(client) => create_token(&client, "admin", "admin", true, None)
                .await
                .map(|t| println!("{t}")),
            TokenCommand::Create(a) => {
                create_token(&a.client, &a.name, &a.role, false, a.valid_for)
                    .await
                    .map(|t| println!("{t}"))
            }
            TokenCommand::Revoke(a) => {
                let request = RevokeTokenRequest {
                    name: a.name.clone(),
                };
                call(&a.client, |mut c| {
                    let r = request.clone();
                    async move { c.revoke_token(r).await }
                })
                .await
                .map(|_| eprintln!("revoked {}", a.name))
            }
            TokenCommand::List(client) => call(&client, |mut c| async move {
                c.list_tokens(ListTokensRequest {}).await
            })
            .await
            .map(|r| {
                let now = wall_ms();
                for t in r.tokens {
                    let state = match (t.revoked, t.expires_at_ms) {
                        (true, _) => "revoked",
                        (false, at) if at != 0 && at <= now => "expired",
                        _ => "active",
                    };
                    println!(
                        "{}\t{}\tcreated {}\t{state}",
                        t.name, t.role, t.created_at_ms
                    );
                }
            }),
        };
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => fail(e),
        }
    })
}

async fn create_token(
    client: &ClientArgs,
    name: &str,
    role: &str,
    bootstrap: bool,
    valid_for: Option<Duration>,
) -> Result<String, String> {
    let request = CreateTokenRequest {
        name: name.into(),
        role: role.into(),
        bootstrap,
        valid_for_ms: valid_for.map_or(0, |d| d.as_millis() as u64),
    };
    call(client, |mut c| {
        let r = request.clone();
        async move { c.create_token(r).await }
    })
    .await
    .map(|r| r.token)
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only what happened within this long (e.g. 1h, 30min); default: everything kept.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_interval)]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `eddy audit`: who changed what, when, with what result (one line each, oldest first).
pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let now = wall_ms();
        let since_ms = args
            .since
            .map_or(0, |d| now.saturating_sub(d.as_millis() as u64));
        match call(&args.client, |mut c| async move {
            c.list_audit(ListAuditRequest { since_ms }).await
        })
        .await
        {
            Ok(r) => {
                for e in r.entries {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        e.at_ms, e.who, e.action, e.target, e.result
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(e),
        }
    })
}

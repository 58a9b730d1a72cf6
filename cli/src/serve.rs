//! `eddy serve`: the ingest API and the live dashboard on one port, and `eddy api-key`, which
//! manages who may use them.
//!
//! Secure by default: posting events needs a producer key (`--api-keys`), and on any address
//! but loopback the dashboard and `/metrics` need a viewer key; `--insecure` opens both.
//! `--tls-cert`/`--tls-key` serve HTTPS (certificates reloaded on SIGHUP).

use anyhow::Context;
use clap::{Args, Subcommand};
use eddy_ingest::access::{Access, KeyFile, KeyRole};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Kafka brokers for the ingest API (HOST:PORT[,HOST:PORT]); without it there is no
    /// ingest API.
    #[arg(long, env = "EDDY_KAFKA")]
    kafka: Option<String>,
    /// The warehouse the dashboard reads (a PostgreSQL URL); without it there is no dashboard.
    #[arg(long, env = "EDDY_WAREHOUSE")]
    warehouse: Option<String>,
    /// Prefix of the topics the ingest API writes.
    #[arg(long, default_value = "shop")]
    topics: String,
    /// Partitions of the topics it creates (existing topics keep theirs).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The API key file (`eddy api-key create --file FILE ...`): producer keys may post
    /// events, viewer keys may open the dashboard and /metrics. Re-read when it changes.
    #[arg(long, value_name = "FILE", env = "EDDY_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Let anyone who reaches the port post events and see the dashboard (no API keys).
    #[arg(long, conflicts_with = "api_keys")]
    insecure: bool,
}

struct Counts(Arc<eddy_ingest::IngestStats>);

impl eddy_dashboard::IngestCounts for Counts {
    fn accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }
    fn rejected(&self) -> u64 {
        self.0.rejected.load(Ordering::Relaxed)
    }
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        let server = Server::start(&args, Some(metrics)).await?;
        println!("serving on {} ({})", server.url, server.describe);
        server.run(crate::cluster::until_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `eddy api-key`: the keys of `eddy serve`, in the file its --api-keys names.
#[derive(Subcommand)]
pub(crate) enum ApiKeyCommand {
    /// Make a key; prints it once (the file keeps only its hash).
    Create(ApiKeyCreateArgs),
    /// Remove a key: a running `eddy serve` refuses it within a second.
    Revoke(ApiKeyNameArgs),
    /// List the keys: name, role, rate.
    List(ApiKeyFileArgs),
}

#[derive(Args)]
pub(crate) struct ApiKeyFileArgs {
    /// The key file (created if missing; readable by its owner only).
    #[arg(long, value_name = "FILE", env = "EDDY_API_KEYS")]
    file: PathBuf,
}

#[derive(Args)]
pub(crate) struct ApiKeyCreateArgs {
    #[command(flatten)]
    file: ApiKeyFileArgs,
    /// Who holds it (letters, digits, `-`, `_`): part of the key and the label of its metrics.
    #[arg(long)]
    name: String,
    /// producer (post events) or viewer (dashboard and /metrics).
    #[arg(long, default_value = "producer", value_parser = ["producer", "viewer"])]
    role: String,
    /// Most events per second a producer may post (a batch counts each event), or
    /// `unlimited`.
    #[arg(long, default_value = "10000", value_parser = parse_rate)]
    rate: Rate,
}

#[derive(Args)]
pub(crate) struct ApiKeyNameArgs {
    #[command(flatten)]
    file: ApiKeyFileArgs,
    name: String,
}

/// A producer's rate: `None` is unlimited.
#[derive(Clone, Copy)]
pub(crate) struct Rate(Option<NonZeroU32>);

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "unlimited" {
        return Ok(Rate(None));
    }
    text.parse::<NonZeroU32>()
        .map(|r| Rate(Some(r)))
        .map_err(|_| {
            format!("`{text}` is not a rate: give events per second (1 or more) or `unlimited`")
        })
}

pub(crate) fn api_key(command: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApiKeyCommand::Create(a) => {
            let role: KeyRole = a.role.parse()?;
            let mut file = KeyFile::load(&a.file.file, true)?;
            let rate = if role == KeyRole::Producer {
                a.rate.0
            } else {
                None
            };
            let key = file.create(&a.name, role, rate)?;
            file.save(&a.file.file)?;
            println!("{key}");
        }
        ApiKeyCommand::Revoke(a) => {
            let mut file = KeyFile::load(&a.file.file, false)?;
            if !file.revoke(&a.name) {
                anyhow::bail!("no key named `{}` in {}", a.name, a.file.file.display());
            }
            file.save(&a.file.file)?;
            eprintln!("revoked {}", a.name);
        }
        ApiKeyCommand::List(a) => {
            for key in KeyFile::load(&a.file, false)?.keys {
                let rate = match (key.role, key.rate) {
                    (KeyRole::Producer, Some(r)) => format!("{r} events/s"),
                    (KeyRole::Producer, None) => "unlimited".into(),
                    (KeyRole::Viewer, _) => "-".into(),
                };
                println!("{}\t{}\t{rate}", key.name, key.role.name());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a stopping server waits for requests in progress (streams included).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The ingest API and the dashboard, bound and ready to run.
pub(crate) struct Server {
    listener: Bound,
    app: axum::Router,
    /// `http://HOST:PORT`
    pub(crate) url: String,
    /// What it serves, for a message.
    pub(crate) describe: String,
}

impl Server {
    /// Connects to Kafka (creating the topics) and starts the dashboard's refresher; `metrics`
    /// adds `/metrics`.
    pub(crate) async fn start(
        args: &ServeArgs,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> anyhow::Result<Server> {
        if args.kafka.is_none() && args.warehouse.is_none() {
            anyhow::bail!("give --kafka (the ingest API), --warehouse (the dashboard) or both");
        }
        let tcp = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = tcp.local_addr()?;
        let https = args.tls_cert.is_some();
        let access = match &args.api_keys {
            Some(path) => Some(Access::watch(path, https)?),
            None if args.insecure => {
                tracing::warn!(
                    "--insecure: anyone who reaches {local} may post events and see the dashboard"
                );
                None
            }
            None if args.kafka.is_some() => anyhow::bail!(
                "the ingest API needs --api-keys FILE (make a key with `eddy api-key create --file FILE --name NAME`), or --insecure to take events from anyone"
            ),
            None if !local.ip().is_loopback() => anyhow::bail!(
                "on {local} the dashboard and /metrics are open to the network: give --api-keys FILE with a viewer key, listen on 127.0.0.1, or --insecure"
            ),
            None => None,
        };
        // Loopback needs no key to watch: only this host's users reach it.
        let viewers = access.clone().filter(|_| !local.ip().is_loopback());
        let mut views = axum::Router::new();
        if let Some(metrics) = metrics {
            views = views.route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move { metrics.render() }
                }),
            );
        }
        let mut app = axum::Router::new();
        let mut stats = None;
        let mut parts = Vec::new();
        if let Some(brokers) = &args.kafka {
            let catalog =
                eddy_ingest::Catalog::ecommerce(&args.topics).context("the event schemas")?;
            let kafka = Arc::new(eddy_kafka::Kafka::connect(brokers).await?);
            let producer = Arc::new(eddy_kafka::Producer::new(kafka));
            let ingest = eddy_ingest::Ingest::new(catalog, producer, args.partitions).await?;
            stats = Some(ingest.stats());
            app = app.merge(ingest.router(access.clone()));
        }
        if let Some(url) = &args.warehouse {
            let counts = stats
                .clone()
                .map(|s| Arc::new(Counts(s)) as Arc<dyn eddy_dashboard::IngestCounts>);
            views = views.merge(eddy_dashboard::Dashboard::start(url.clone(), counts).router());
            parts.push("the dashboard at /");
        }
        if args.kafka.is_some() {
            parts.push("the ingest API at /api/v1/events");
        }
        if let Some(access) = viewers {
            views = views
                .route_layer(axum::middleware::from_fn_with_state(
                    (access.clone(), KeyRole::Viewer),
                    eddy_ingest::access::require,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    access,
                    eddy_ingest::access::key_from_query,
                ));
            parts.push("viewer key needed");
        }
        app = app.merge(views);
        let (listener, scheme) = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => (Bound::Tls(TlsListener::start(tcp, cert, key)?), "https"),
            _ => (Bound::Plain(tcp), "http"),
        };
        Ok(Server {
            listener,
            app,
            url: format!("{scheme}://{local}"),
            describe: parts.join(", "),
        })
    }

    /// Serves until `shutdown` completes, then lets requests in progress finish for at most
    /// [`DRAIN`]: a dashboard page's event stream never ends by itself, and must not keep the
    /// process from stopping.
    pub(crate) async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        match self.listener {
            Bound::Plain(tcp) => serve_until(tcp, self.app, shutdown).await,
            Bound::Tls(tls) => serve_until(tls, self.app, shutdown).await,
        }
    }
}

async fn serve_until<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    });
    let mut serving = std::pin::pin!(std::future::IntoFuture::into_future(serving));
    tokio::select! {
        result = &mut serving => return result.context("the HTTP server failed"),
        _ = signalled_rx => {}
    }
    match tokio::time::timeout(DRAIN, serving).await {
        Ok(result) => result.context("the HTTP server failed"),
        Err(_) => Ok(()),
    }
}

/// The port, plain or HTTPS.
enum Bound {
    Plain(tokio::net::TcpListener),
    Tls(TlsListener),
}

/// HTTPS connections whose handshake is done ([`eddy_security::accept::accept_tls`]), with
/// the certificate reloaded on SIGHUP.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(
        tcp: tokio::net::TcpListener,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> anyhow::Result<TlsListener> {
        let config = Arc::new(RwLock::new(eddy_security::tls::https_config(cert, key)?));
        let local = tcp.local_addr()?;
        {
            let (config, cert, key) = (Arc::clone(&config), cert.to_path_buf(), key.to_path_buf());
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    match eddy_security::tls::https_config(&cert, &key) {
                        Ok(fresh) => {
                            *config.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                            tracing::info!("HTTPS certificate reloaded");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTPS certificate not reloaded; the previous one stays")
                        }
                    }
                }
            });
        }
        let accepted = eddy_security::accept::accept_tls(
            tcp,
            move || {
                Some(Arc::clone(
                    &config.read().unwrap_or_else(|e| e.into_inner()),
                ))
            },
            std::future::pending(),
        );
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor ends only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl ServeArgs {
    /// The settings `eddy local --ecommerce` serves with.
    pub(crate) fn local(
        listen: String,
        kafka: String,
        warehouse: String,
        partitions: i32,
        api_keys: PathBuf,
    ) -> Self {
        ServeArgs {
            listen,
            kafka: Some(kafka),
            warehouse: Some(warehouse),
            topics: "shop".into(),
            partitions,
            api_keys: Some(api_keys),
            tls_cert: None,
            tls_key: None,
            insecure: false,
        }
    }
}

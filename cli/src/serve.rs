//! `eddy serve`: the ingest API and the live dashboard on one port.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    if args.kafka.is_none() && args.warehouse.is_none() {
        eprintln!("error: give --kafka (the ingest API), --warehouse (the dashboard) or both");
        return Ok(ExitCode::from(2));
    }
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

/// How long a stopping server waits for requests in progress (streams included).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The ingest API and the dashboard, bound and ready to run.
pub(crate) struct Server {
    listener: tokio::net::TcpListener,
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
        let mut app = axum::Router::new();
        if let Some(metrics) = metrics {
            app = app.route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move { metrics.render() }
                }),
            );
        }
        let mut stats = None;
        let mut parts = Vec::new();
        if let Some(brokers) = &args.kafka {
            let catalog =
                eddy_ingest::Catalog::ecommerce(&args.topics).context("the event schemas")?;
            let kafka = Arc::new(eddy_kafka::Kafka::connect(brokers).await?);
            let producer = Arc::new(eddy_kafka::Producer::new(kafka));
            let ingest = eddy_ingest::Ingest::new(catalog, producer, args.partitions).await?;
            stats = Some(ingest.stats());
            app = app.merge(ingest.router());
        }
        if let Some(url) = &args.warehouse {
            let counts = stats
                .clone()
                .map(|s| Arc::new(Counts(s)) as Arc<dyn eddy_dashboard::IngestCounts>);
            app = app.merge(eddy_dashboard::Dashboard::start(url.clone(), counts).router());
            parts.push("the dashboard at /");
        }
        if args.kafka.is_some() {
            parts.push("the ingest API at /api/v1/events");
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let url = format!("http://{}", listener.local_addr()?);
        Ok(Server {
            listener,
            app,
            url,
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
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(self.listener, self.app).with_graceful_shutdown(async move {
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
}

impl ServeArgs {
    /// The settings `eddy local --ecommerce` serves with.
    pub(crate) fn local(listen: String, kafka: String, warehouse: String, partitions: i32) -> Self {
        ServeArgs {
            listen,
            kafka: Some(kafka),
            warehouse: Some(warehouse),
            topics: "shop".into(),
            partitions,
        }
    }
}

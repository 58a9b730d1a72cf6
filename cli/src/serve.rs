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
        let mut app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
        let mut stats = None;
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
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        let mut parts = Vec::new();
        if args.warehouse.is_some() {
            parts.push("the dashboard at /");
        }
        if args.kafka.is_some() {
            parts.push("the ingest API at /api/v1/events");
        }
        println!("serving on http://{address} ({})", parts.join(", "));
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the HTTP server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

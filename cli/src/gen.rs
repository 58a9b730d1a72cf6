//! `eddy gen ecommerce`: generated shop traffic to files, Kafka or the ingest API, and its
//! ground truth.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use eddy_gen::{Anomaly, Config, Detector, Fate, Generator, Sent, Truth};
use eddy_ingest::Catalog;
use eddy_runtime::types::parse_timestamp;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub(crate) enum GenCommand {
    /// A shop's clicks, carts, purchases and currency rates: sessions that move from views to
    /// carts to purchases, popular products, several currencies, malformed and late events and
    /// injected anomalies; reproducible from --seed and --start.
    Ecommerce(EcommerceArgs),
}

#[derive(Args)]
pub(crate) struct EcommerceArgs {
    /// Where the events go: `file:DIR` (one JSON-lines file per topic, as ingest would route
    /// them), `kafka://HOST:PORT` (the topics, directly) or `http(s)://HOST:PORT` (the ingest API of
    /// `eddy serve`, which validates them). Without --to, only --expected is computed.
    #[arg(long, value_name = "TARGET")]
    to: Option<String>,
    /// Write the exact KPIs, alerts and totals of the generated data as JSON into FILE (`-`:
    /// standard output).
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// Seed of every random choice: the same seed and start give the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event time of the first event: `now`, or e.g. 2026-01-01T00:00:00Z.
    #[arg(long, default_value = "now")]
    start: String,
    /// Shop events per second of event time (sent at this rate in wall-clock time unless
    /// --fast).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this much event time (e.g. 10min); without it and without --events the
    /// stream goes on until Ctrl-C.
    #[arg(long, value_parser = crate::parse_interval)]
    duration: Option<Duration>,
    /// Stop after this many shop events.
    #[arg(long)]
    events: Option<u64>,
    /// Send as fast as the target takes them instead of at --rate in wall-clock time (event
    /// times are the same either way).
    #[arg(long)]
    fast: bool,
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    #[arg(long, default_value_t = 2_000)]
    products: u32,
    /// Mean product views per session.
    #[arg(long, default_value_t = 5.0)]
    views_per_session: f64,
    /// Probability that a product view leads to adding it to the cart.
    #[arg(long, default_value_t = 0.25)]
    cart_rate: f64,
    /// Probability that a session with a non-empty cart ends with a purchase.
    #[arg(long, default_value_t = 0.6)]
    purchase_rate: f64,
    /// Share of events sent malformed (missing fields, wrong types, broken JSON, ...).
    #[arg(long, default_value_t = 0.005)]
    malformed_share: f64,
    /// Share of events sent late: dated --late-by before they are sent.
    #[arg(long, default_value_t = 0.001)]
    late_share: f64,
    #[arg(long, default_value = "1h", value_parser = crate::parse_interval)]
    late_by: Duration,
    /// Inject an anomaly: `revenue-drop:at=10min,for=3min,factor=0.2` or
    /// `traffic-spike:at=20min,for=2min,factor=5` (at: from the start); repeat for several.
    #[arg(long, value_name = "SPEC", value_parser = parse_anomaly)]
    anomaly: Vec<Anomaly>,
    /// Prefix of the topics (and file names): <prefix>.clicks, .carts, .purchases,
    /// .currency_rates, .dead_letter.
    #[arg(long, default_value = "shop")]
    topics: String,
    /// Partitions of topics created on Kafka (existing topics keep theirs).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Events per HTTP request to the ingest API.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// HTTP requests in flight at once. More is faster but lets requests overtake each other,
    /// so events may reach Kafka out of order by more than the jobs' watermark delay.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// The producer API key for the ingest API (`eddy api-key create`).
    #[arg(
        long,
        value_name = "KEY",
        env = "EDDY_INGEST_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// For an https:// target: the CA certificates (PEM) the server's certificate must chain
    /// to; default: the public web's roots.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

fn parse_anomaly(text: &str) -> Result<Anomaly, String> {
    Anomaly::parse(text).map_err(|e| e.message)
}

pub(crate) fn gen(command: GenCommand) -> anyhow::Result<ExitCode> {
    let GenCommand::Ecommerce(args) = command;
    let start = if args.start == "now" {
        let ms = eddy_runtime::types::wall_clock_ms();
        ms - ms % 1000
    } else {
        match parse_timestamp(&args.start) {
            Some(t) => t,
            None => {
                eprintln!(
                    "error: --start `{}` is not a time; use `now` or e.g. 2026-01-01T00:00:00Z",
                    args.start
                );
                return Ok(ExitCode::from(2));
            }
        }
    };
    let config = Config {
        seed: args.seed,
        start,
        rate: args.rate,
        duration: args.duration.map(|d| d.as_millis() as i64),
        events: args.events,
        users: args.users,
        products: args.products,
        views_per_session: args.views_per_session,
        cart_rate: args.cart_rate,
        purchase_rate: args.purchase_rate,
        malformed_share: args.malformed_share,
        late_share: args.late_share,
        late_by: args.late_by.as_millis() as i64,
        anomalies: args.anomaly.clone(),
        ..Config::default()
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let bounded = config.duration.is_some() || config.events.is_some();
    if !bounded
        && (args.expected.is_some() || args.to.as_deref().is_none_or(|t| t.starts_with("file:")))
    {
        eprintln!("error: --expected and file output need a bounded data set: give --duration (e.g. 10min) or --events");
        return Ok(ExitCode::from(2));
    }
    let catalog = Catalog::ecommerce(&args.topics).context("the event schemas")?;
    let mut sink: Box<dyn Target> = match args.to.as_deref() {
        None => Box::new(Nowhere),
        Some(t) if t.starts_with("file:") => {
            Box::new(Files::create(PathBuf::from(&t["file:".len()..]), &catalog)?)
        }
        Some(t) if t.starts_with("kafka://") => Box::new(KafkaTarget::connect(
            &t["kafka://".len()..],
            &catalog,
            args.partitions,
        )?),
        Some(t) if t.starts_with("http://") || t.starts_with("https://") => {
            Box::new(HttpTarget::new(
                t,
                args.batch,
                args.in_flight,
                crate::http::Client::new(args.ca.as_deref(), args.api_key.as_deref())?,
            )?)
        }
        Some(t) => {
            eprintln!("error: --to `{t}`: use file:DIR, kafka://HOST:PORT or http(s)://HOST:PORT");
            return Ok(ExitCode::from(2));
        }
    };
    let paced = args.to.as_deref().is_some_and(|t| !t.starts_with("file:")) && !args.fast;
    let mut truth = args
        .expected
        .as_ref()
        .map(|_| Truth::new(&config, Detector::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let _ = ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let started = Instant::now();
    let (mut sent, mut malformed, mut last_report) = (0u64, 0u64, Instant::now());
    for line in Generator::new(config.clone()) {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if paced {
            let due = Duration::from_millis((line.at - start).max(0) as u64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                sink.flush()?;
                std::thread::sleep(wait);
            }
        }
        if let Some(t) = truth.as_mut() {
            t.observe(&line);
        }
        malformed += matches!(line.fate, Fate::Malformed { .. }) as u64;
        sent += 1;
        sink.send(&catalog, line)?;
        if last_report.elapsed() >= Duration::from_secs(5) && !bounded {
            eprintln!(
                "{sent} events sent ({malformed} malformed), {:.0}/s",
                sent as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    sink.finish()?;
    eprintln!(
        "{sent} events ({malformed} malformed) in {:.2} s{}",
        started.elapsed().as_secs_f64(),
        sink.describe()
    );
    if let (Some(path), Some(truth)) = (&args.expected, truth) {
        let expected = truth.finish();
        let text = serde_json::to_string_pretty(&expected)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where generated lines go.
trait Target {
    fn send(&mut self, catalog: &Catalog, line: Sent) -> anyhow::Result<()>;
    /// Sends what is buffered (before waiting for the pace).
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()>;
    fn describe(&self) -> String {
        String::new()
    }
}

/// No output: only the ground truth.
struct Nowhere;

impl Target for Nowhere {
    fn send(&mut self, _: &Catalog, _: Sent) -> anyhow::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// RFC 3339 of the line's send time, for dead-letter records.
fn received_at(line: &Sent) -> String {
    let mut s = String::new();
    eddy_gen::stream::rfc3339(line.at, &mut s);
    s
}

/// One JSON-lines file per topic: what the ingest API would have appended.
struct Files {
    dir: PathBuf,
    files: HashMap<String, std::io::BufWriter<std::fs::File>>,
}

impl Files {
    fn create(dir: PathBuf, catalog: &Catalog) -> anyhow::Result<Files> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let mut files = HashMap::new();
        for topic in catalog.topics() {
            let path = dir.join(format!("{topic}.jsonl"));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create `{}`", path.display()))?;
            files.insert(
                topic.to_string(),
                std::io::BufWriter::with_capacity(1 << 20, file),
            );
        }
        Ok(Files { dir, files })
    }

    fn write(&mut self, topic: &str, text: &str) -> anyhow::Result<()> {
        let file = self
            .files
            .get_mut(topic)
            .context("a topic of the catalog")?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        Ok(())
    }
}

impl Target for Files {
    fn send(&mut self, catalog: &Catalog, line: Sent) -> anyhow::Result<()> {
        let (stored, _) = catalog.store(&line.envelope, || received_at(&line));
        self.write(stored.topic, &stored.value)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        for file in self.files.values_mut() {
            file.flush()?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(", written to {}", self.dir.display())
    }
}

/// Straight into the topics (bypassing the ingest API, but routed and validated the same way),
/// in the order generated: sends are spawned on a single-threaded runtime, which first polls
/// tasks in the order they were spawned, to a producer whose topics are prepared, whose sends
/// enqueue their record in that first poll, with one request per partition in flight. (Sends
/// spawned on several threads were appended in any order, seconds of event time apart, which
/// made events late that are not.)
struct KafkaTarget {
    runtime: tokio::runtime::Runtime,
    producer: Arc<eddy_kafka::Producer>,
    pending: Vec<tokio::task::JoinHandle<Result<(i32, i64), eddy_kafka::KafkaError>>>,
}

impl KafkaTarget {
    fn connect(brokers: &str, catalog: &Catalog, partitions: i32) -> anyhow::Result<KafkaTarget> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let producer = runtime.block_on(async {
            let kafka = Arc::new(eddy_kafka::Kafka::connect(brokers).await?);
            let topics = catalog.topic_partitions(partitions);
            for (topic, n) in &topics {
                kafka.ensure_topic(topic, *n).await?;
            }
            let producer = eddy_kafka::Producer::new(kafka);
            for (topic, _) in &topics {
                producer.prepare(topic).await?;
            }
            Ok::<_, eddy_kafka::KafkaError>(Arc::new(producer))
        })?;
        Ok(KafkaTarget {
            runtime,
            producer,
            pending: Vec::new(),
        })
    }
}

impl Target for KafkaTarget {
    fn send(&mut self, catalog: &Catalog, line: Sent) -> anyhow::Result<()> {
        let (stored, _) = catalog.store(&line.envelope, || received_at(&line));
        let (topic, key, value) = (
            stored.topic.to_string(),
            stored.key,
            stored.value.into_owned().into_bytes(),
        );
        let producer = Arc::clone(&self.producer);
        self.pending.push(self.runtime.spawn(async move {
            producer
                .send(&topic, key.map(String::into_bytes), value)
                .await
        }));
        // The producer appends each partition's records in order, one request at a time;
        // waiting every few hundred events bounds what is held here.
        if self.pending.len() >= 500 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.runtime.block_on(async {
            for handle in pending {
                handle.await??;
            }
            Ok::<_, anyhow::Error>(())
        })
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}

/// To the ingest API, in NDJSON batches; a refused request (the server or Kafka down) is
/// retried, so every event is acknowledged. One request is in flight by default: concurrent
/// requests may be appended in another order than they were sent, and a currency's rates or a
/// session's events out of order by more than the jobs' watermark delay change the results.
struct HttpTarget {
    runtime: tokio::runtime::Runtime,
    client: crate::http::Client,
    url: String,
    batch: usize,
    body: Vec<u8>,
    lines: usize,
    in_flight: Vec<tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>>,
    /// Requests in flight at once.
    concurrency: usize,
    accepted: u64,
    rejected: u64,
}

impl HttpTarget {
    fn new(
        base: &str,
        batch: usize,
        concurrency: usize,
        client: crate::http::Client,
    ) -> anyhow::Result<HttpTarget> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        if batch == 0 {
            bail!("--batch must be at least 1");
        }
        Ok(HttpTarget {
            runtime,
            client,
            url: format!("{}/api/v1/events/batch", base.trim_end_matches('/')),
            batch,
            body: Vec::new(),
            lines: 0,
            in_flight: Vec::new(),
            concurrency: concurrency.max(1),
            accepted: 0,
            rejected: 0,
        })
    }

    fn send_body(&mut self) -> anyhow::Result<()> {
        if self.lines == 0 {
            return Ok(());
        }
        while self.in_flight.len() >= self.concurrency {
            let first = self.in_flight.remove(0);
            let (a, r) = self.runtime.block_on(first)??;
            self.accepted += a;
            self.rejected += r;
        }
        let body = std::mem::take(&mut self.body);
        self.lines = 0;
        let (client, url) = (self.client.clone(), self.url.clone());
        self.in_flight.push(self.runtime.spawn(async move {
            let mut delay = Duration::from_millis(100);
            let mut started = Instant::now();
            loop {
                match client
                    .post(&url, "application/x-ndjson", body.clone())
                    .await
                {
                    Ok(a) if a.status == 200 => {
                        let v: serde_json::Value = serde_json::from_str(&a.body).with_context(
                            || format!("unexpected answer from {url}: {}", a.body),
                        )?;
                        let accepted = v["accepted"].as_u64().unwrap_or(0);
                        let rejected = v["rejected"].as_array().map_or(0, |r| r.len() as u64);
                        return Ok((accepted, rejected));
                    }
                    // Over the key's rate: nothing was stored; wait as told, which is no
                    // failure of the server.
                    Ok(a) if a.status == 429 => {
                        tracing::debug!(body = %a.body, "over the key's rate; waiting");
                        tokio::time::sleep(a.retry_after.unwrap_or(delay)).await;
                        started = Instant::now();
                        continue;
                    }
                    Ok(a) if a.status < 500 => {
                        bail!(
                            "the ingest API at {url} refused the batch ({}): {}",
                            a.status,
                            a.body
                        )
                    }
                    Ok(a) => {
                        tracing::warn!(status = a.status, text = %a.body, "ingest unavailable; retrying");
                    }
                    Err(e) if e.is::<crate::http::TlsRefused>() => return Err(e),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "ingest unreachable; retrying"),
                }
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("the ingest API at {url} did not take a batch within 60 s");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }));
        Ok(())
    }
}

impl Target for HttpTarget {
    fn send(&mut self, _: &Catalog, line: Sent) -> anyhow::Result<()> {
        self.body.extend_from_slice(line.envelope.as_bytes());
        self.body.push(b'\n');
        self.lines += 1;
        if self.lines >= self.batch {
            self.send_body()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.send_body()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.send_body()?;
        for handle in std::mem::take(&mut self.in_flight) {
            let (a, r) = self.runtime.block_on(handle)??;
            self.accepted += a;
            self.rejected += r;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            ", {} accepted and {} rejected by {}",
            self.accepted, self.rejected, self.url
        )
    }
}

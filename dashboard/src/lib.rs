//! The live dashboard: one page, updated over server-sent events with what the warehouse holds.
//!
//! The page shows committed results only: it reads the KPI tables the analytics job writes
//! exactly once, so what it shows is always what `SELECT` returns. The sinks `NOTIFY
//! eddy_commit` in every commit transaction; the server `LISTEN`s and sends a new snapshot to
//! every open page within a few milliseconds of a commit (and every few seconds regardless).
//!
//! - `GET /`: the page (HTML, CSS and JavaScript in one file, no build step);
//! - `GET /api/v1/dashboard`: the snapshot as JSON;
//! - `GET /api/v1/dashboard/stream`: `text/event-stream`, one `snapshot` event per change.

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::Stream;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const PAGE: &str = include_str!("../static/index.html");

/// Counters of a co-hosted ingest API, shown beside the warehouse's numbers.
pub trait IngestCounts: Send + Sync {
    /// Events the API has handed to Kafka (acknowledged by the broker).
    fn accepted(&self) -> u64;
    /// Events it refused (and sent to the dead-letter topic).
    fn rejected(&self) -> u64;
}

/// One row of revenue per minute.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RevenuePoint {
    /// The minute, `YYYY-MM-DD HH:MM:SS` in UTC.
    pub window_start: String,
    /// Revenue converted at the rate in force at each order's time; 0 for a minute without.
    pub revenue_usd: f64,
    pub orders: i64,
    /// None for a minute without orders.
    pub avg_order_value_usd: Option<f64>,
}

/// The funnel of one 5-minute window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Funnel {
    /// The window's start, `YYYY-MM-DD HH:MM:SS` in UTC.
    pub window_start: String,
    /// Sessions with a click, with a cart event, and with a purchase in the window.
    pub viewed: i64,
    pub carted: i64,
    pub purchased: i64,
    /// purchased / viewed; None without views.
    pub conversion: Option<f64>,
}

/// One of the top products of the latest window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopProduct {
    /// 1 for the highest revenue.
    pub rank: i32,
    pub product_id: String,
    pub revenue_usd: f64,
    /// Units sold in the window.
    pub units: i64,
}

/// Activity in the latest minute.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Activity {
    /// The minute, `YYYY-MM-DD HH:MM:SS` in UTC.
    pub window_start: String,
    /// Distinct users and sessions with an event in the minute.
    pub active_users: i64,
    pub active_sessions: i64,
    /// Clicks, carts and purchases in the minute.
    pub events: i64,
}

/// An alert of the anomaly detector.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alert {
    /// `revenue_usd` or `events`.
    pub metric: String,
    pub window_start: String,
    /// The window's value and the median of the windows before it.
    pub observed: f64,
    pub expected: f64,
    /// The robust z-score (negative for a drop).
    pub score: f64,
}

/// Everything the page shows.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Snapshot {
    /// The last hour of revenue per minute, oldest first, minutes without orders as 0.
    pub revenue: Vec<RevenuePoint>,
    /// The latest funnel window.
    pub funnel: Option<Funnel>,
    /// The latest window's top products, by rank.
    pub top_products: Vec<TopProduct>,
    /// The start of the window `top_products` ranks.
    pub top_products_window: Option<String>,
    /// The latest minute of activity.
    pub activity: Option<Activity>,
    /// The 20 latest alerts, newest first.
    pub alerts: Vec<Alert>,
    /// Records the job could not parse, and events that came after their window closed.
    pub dead_letters: i64,
    pub late_events: i64,
    /// Ingest API counters since it started (absent without a co-hosted API).
    pub ingest_accepted: Option<u64>,
    pub ingest_rejected: Option<u64>,
    /// Increases with every new snapshot.
    pub version: u64,
    /// Why the warehouse could not be read, if it could not.
    pub error: Option<String>,
}

/// The dashboard server's state: the latest snapshot, refreshed by a background task.
#[derive(Clone)]
pub struct Dashboard {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// How often the snapshot is refreshed without a notification.
const REFRESH: Duration = Duration::from_secs(3);
/// Notifications arriving this close together make one refresh.
const DEBOUNCE: Duration = Duration::from_millis(20);

const TS: &str = "to_char(window_start, 'YYYY-MM-DD HH24:MI:SS')";

/// Reads a snapshot from the warehouse in one read-only transaction, so that it shows one
/// state of the warehouse and not parts of two commits.
async fn read(client: &tokio_postgres::Client) -> Result<Snapshot, tokio_postgres::Error> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let read = read_tables(client).await;
    let end = client
        .batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await;
    let s = read?;
    end?;
    Ok(s)
}

async fn read_tables(client: &tokio_postgres::Client) -> Result<Snapshot, tokio_postgres::Error> {
    let mut s = Snapshot::default();
    let rows = client
        .query(
            // Every minute of the last hour, those without orders as 0 (as the anomaly
            // detector counts them), so that a drop shows as a drop and not as a gap.
            "WITH span AS (
               SELECT greatest(min(window_start), max(window_start) - interval '59 minutes') AS lo,
                      max(window_start) AS hi
               FROM kpi_revenue_minute)
             SELECT to_char(m, 'YYYY-MM-DD HH24:MI:SS'), coalesce(r.revenue_usd, 0)::float8,
                    coalesce(r.orders, 0), r.avg_order_value_usd
             FROM span, generate_series(span.lo, span.hi, interval '1 minute') m
             LEFT JOIN kpi_revenue_minute r ON r.window_start = m
             ORDER BY m",
            &[],
        )
        .await?;
    s.revenue = rows
        .iter()
        .map(|r| {
            Ok(RevenuePoint {
                window_start: r.try_get(0)?,
                revenue_usd: r.try_get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                orders: r.try_get(2)?,
                avg_order_value_usd: r.try_get(3)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    s.funnel = client
        .query_opt(
            &format!(
                "SELECT {TS}, viewed, carted, purchased, conversion FROM kpi_funnel_5min
                 ORDER BY window_start DESC LIMIT 1"
            ),
            &[],
        )
        .await?
        .map(|r| {
            Ok::<_, tokio_postgres::Error>(Funnel {
                window_start: r.try_get(0)?,
                viewed: r.try_get(1)?,
                carted: r.try_get(2)?,
                purchased: r.try_get(3)?,
                conversion: r.try_get(4)?,
            })
        })
        .transpose()?;
    let top = client
        .query(
            &format!(
                "SELECT {TS}, rank, product_id, revenue_usd::float8, units FROM kpi_top_products_5min
                 WHERE window_start = (SELECT max(window_start) FROM kpi_top_products_5min)
                 ORDER BY rank"
            ),
            &[],
        )
        .await?;
    s.top_products_window = top.first().map(|r| r.try_get(0)).transpose()?;
    s.top_products = top
        .iter()
        .map(|r| {
            Ok(TopProduct {
                rank: r.try_get(1)?,
                product_id: r.try_get(2)?,
                revenue_usd: r.try_get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                units: r.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    s.activity = client
        .query_opt(
            &format!(
                "SELECT {TS}, active_users, active_sessions, events FROM kpi_traffic_minute
                 ORDER BY window_start DESC LIMIT 1"
            ),
            &[],
        )
        .await?
        .map(|r| {
            Ok::<_, tokio_postgres::Error>(Activity {
                window_start: r.try_get(0)?,
                active_users: r.try_get(1)?,
                active_sessions: r.try_get(2)?,
                events: r.try_get(3)?,
            })
        })
        .transpose()?;
    s.alerts = client
        .query(
            &format!(
                "SELECT metric, {TS}, observed, expected, score FROM alerts
                 ORDER BY window_start DESC, metric LIMIT 20"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Alert {
                metric: r.try_get(0)?,
                window_start: r.try_get(1)?,
                observed: r.try_get(2)?,
                expected: r.try_get(3)?,
                score: r.try_get(4)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM late_events)",
            &[],
        )
        .await?;
    s.dead_letters = counts.try_get(0)?;
    s.late_events = counts.try_get(1)?;
    Ok(s)
}

impl Dashboard {
    /// Starts the refresher for the warehouse at `url` (on the current tokio runtime).
    pub fn start(url: String, ingest: Option<Arc<dyn IngestCounts>>) -> Dashboard {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(refresh(url, ingest, tx));
        Dashboard { snapshots: rx }
    }

    /// The page and its API.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/v1/dashboard", get(snapshot))
            .route("/api/v1/dashboard/stream", get(stream))
            .with_state(self)
    }
}

/// Keeps the snapshot current: reconnects to the warehouse when needed, refreshes on every
/// commit notification and every few seconds.
async fn refresh(
    url: String,
    ingest: Option<Arc<dyn IngestCounts>>,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    // A page gets a new snapshot only when something it shows changed.
    let publish = |mut s: Snapshot| {
        if let Some(i) = &ingest {
            s.ingest_accepted = Some(i.accepted());
            s.ingest_rejected = Some(i.rejected());
        }
        let current = tx.borrow().clone();
        s.version = current.version;
        if *current != s || current.version == 0 {
            s.version = current.version + 1;
            let _ = tx.send(Arc::new(s));
        }
    };
    loop {
        let connected = match eddy_postgres::tls::config(&url) {
            Ok((config, tls)) => config.connect(tls).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (client, mut connection) = match connected {
            Ok(c) => c,
            Err(e) => {
                publish(Snapshot {
                    error: Some(format!(
                        "cannot reach the warehouse at {}: {e}",
                        eddy_postgres::redact(&url)
                    )),
                    ..Snapshot::default()
                });
                tokio::time::sleep(REFRESH).await;
                continue;
            }
        };
        let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures::StreamExt;
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        let _ = notify_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        if client.batch_execute("LISTEN eddy_commit").await.is_err() {
            driver.abort();
            tokio::time::sleep(REFRESH).await;
            continue;
        }
        loop {
            match read(&client).await {
                Ok(s) => publish(s),
                Err(e) => {
                    publish(Snapshot {
                        error: Some(format!(
                            "cannot read the warehouse: {e} (has `eddy warehouse migrate` run?)"
                        )),
                        ..Snapshot::default()
                    });
                    if client.is_closed() {
                        break;
                    }
                }
            }
            tokio::select! {
                n = notify_rx.recv() => {
                    if n.is_none() {
                        break;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while notify_rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
        driver.abort();
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn snapshot(State(d): State<Dashboard>) -> Response {
    let s = d.snapshots.borrow().clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&*s).unwrap_or_default(),
    )
        .into_response()
}

async fn stream(State(d): State<Dashboard>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = d.snapshots.clone();
    rx.mark_changed();
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let s = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("snapshot")
            .data(serde_json::to_string(&*s).unwrap_or_default());
        Some((Ok(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

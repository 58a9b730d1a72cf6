//! The ingest HTTP API.
//!
//! - `POST /api/v1/events`: one envelope `{"type": "click", "event": {...}}`.
//! - `POST /api/v1/events/batch`: a JSON array of envelopes, or one envelope per line
//!   (`Content-Type: application/x-ndjson`; a broken line is refused alone).
//! - `GET /api/v1/health`.
//!
//! Every event is validated against its schema. Valid events are appended to their type's
//! topic, refused ones to the dead-letter topic with the reason and the original text, and the
//! answer comes only once the broker has acknowledged all of them:
//! `{"accepted": 2, "rejected": [{"index": 1, "reason": "..."}]}` (200, also when some were
//! refused; 422 for a single refused event). If Kafka fails, the answer is 503 and nothing is
//! acknowledged: the client sends again, so an event is never lost (it may be stored twice;
//! the warehouse's fact tables are keyed by event id).

use crate::catalog::Catalog;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use eddy_kafka::Producer;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How long a request waits for Kafka's acknowledgements before it answers 503.
const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Largest request body accepted (larger: 413 from the body limit).
const MAX_BODY: usize = 16 << 20;

/// Most events in one request: each costs a future and an answer entry, so a body of millions
/// of tiny lines is refused whole (413) instead of held in memory.
pub const MAX_EVENTS: usize = 10_000;

/// Largest event: one Kafka record, within the producer's request size with room for its
/// envelope. A larger one is refused with the whole request (413) before anything is stored,
/// so a client never gets a 503 after part of its batch was stored.
pub const MAX_EVENT_BYTES: usize = 900 * 1024;

/// Counts since the server started, for the dashboard and `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
}

/// What the handlers share.
#[derive(Clone)]
pub struct Ingest {
    catalog: Arc<Catalog>,
    producer: Arc<Producer>,
    stats: Arc<IngestStats>,
}

impl Ingest {
    /// Creates the catalog's topics that do not exist yet (with `partitions` partitions).
    pub async fn new(
        catalog: Catalog,
        producer: Arc<Producer>,
        partitions: i32,
    ) -> Result<Ingest, eddy_kafka::KafkaError> {
        for (topic, n) in catalog.topic_partitions(partitions) {
            producer.kafka().ensure_topic(topic, n).await?;
        }
        Ok(Ingest {
            catalog: Arc::new(catalog),
            producer,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.stats)
    }

    /// The API's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/v1/events", post(single))
            .route("/api/v1/events/batch", post(batch))
            .route("/api/v1/health", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// Validates, appends and acknowledges a list of envelopes.
    /// `envelopes` come with their index in the request, which a rejection names.
    async fn take(&self, envelopes: Vec<(usize, Envelope<'_>)>) -> Result<Outcome, Refusal> {
        if envelopes.len() > MAX_EVENTS {
            return Err(Refusal::TooLarge(format!(
                "{} events in one request, at most {MAX_EVENTS}: split the batch",
                envelopes.len()
            )));
        }
        if let Some((index, len)) = envelopes.iter().find_map(|(i, e)| {
            let len = e.text().len();
            (len > MAX_EVENT_BYTES).then_some((*i, len))
        }) {
            return Err(Refusal::TooLarge(format!(
                "event {index} is {len} bytes, at most {MAX_EVENT_BYTES}: nothing of this request was stored"
            )));
        }
        self.store(envelopes).await.map_err(Refusal::Unavailable)
    }

    async fn store(&self, envelopes: Vec<(usize, Envelope<'_>)>) -> Result<Outcome, String> {
        let received_at = now_rfc3339();
        let mut rejected = Vec::new();
        let mut sends = Vec::with_capacity(envelopes.len());
        for (index, envelope) in envelopes {
            let (stored, rejection) = match envelope {
                Envelope::Text(text) => self.catalog.store(text, || received_at.clone()),
                Envelope::Broken(text, reason) => {
                    let rejection = crate::catalog::Rejection { kind: None, reason };
                    let stored = self.catalog.dead_letter(&rejection, text, &received_at);
                    (stored, Some(rejection))
                }
            };
            sends.push(self.producer.send(
                stored.topic,
                stored.key.map(String::into_bytes),
                stored.value.into_owned().into_bytes(),
            ));
            if let Some(rejection) = rejection {
                rejected.push(Rejected {
                    index,
                    reason: rejection.reason,
                });
            }
        }
        let total = sends.len();
        let results = tokio::time::timeout(STORE_TIMEOUT, futures::future::join_all(sends))
            .await
            .map_err(|_| {
                format!(
                    "Kafka did not acknowledge within {} s",
                    STORE_TIMEOUT.as_secs()
                )
            })?;
        for result in results {
            result.map_err(|e| e.to_string())?;
        }
        let accepted = (total - rejected.len()) as u64;
        self.stats.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.stats
            .rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        metrics::counter!("eddy_ingest_events_accepted_total").increment(accepted);
        metrics::counter!("eddy_ingest_events_rejected_total").increment(rejected.len() as u64);
        Ok(Outcome { accepted, rejected })
    }
}

/// One element of a request.
enum Envelope<'a> {
    Text(&'a str),
    /// A line or element that could not even be read as text.
    Broken(&'a str, String),
}

impl Envelope<'_> {
    fn text(&self) -> &str {
        match self {
            Envelope::Text(t) | Envelope::Broken(t, _) => t,
        }
    }
}

/// Why a request was not stored.
enum Refusal {
    /// Too many or too large events: 413, nothing stored.
    TooLarge(String),
    /// Kafka failed: 503, send again.
    Unavailable(String),
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::TooLarge(reason) => error(StatusCode::PAYLOAD_TOO_LARGE, reason),
            Refusal::Unavailable(e) => unavailable(e),
        }
    }
}

#[derive(Serialize)]
struct Rejected {
    /// The position in the array, or the line number (from 0) of NDJSON.
    index: usize,
    reason: String,
}

#[derive(Serialize)]
struct Outcome {
    accepted: u64,
    rejected: Vec<Rejected>,
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn now_rfc3339() -> String {
    let mut s = String::new();
    eddy_runtime::types::format_rfc3339(eddy_runtime::types::wall_clock_ms(), &mut s);
    s
}

fn unavailable(e: String) -> Response {
    tracing::warn!(error = %e, "Kafka refused events; answering 503");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the events were not stored ({e}); send them again"),
    )
}

async fn single(State(ingest): State<Ingest>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => Envelope::Text(t.trim()),
        Err(e) => Envelope::Broken("", format!("not UTF-8: {e}")),
    };
    match ingest.take(vec![(0, text)]).await {
        Ok(outcome) if outcome.rejected.is_empty() => json(StatusCode::OK, &outcome),
        Ok(outcome) => json(StatusCode::UNPROCESSABLE_ENTITY, &outcome),
        Err(refusal) => refusal.response(),
    }
}

/// The events of a batch body with their indexes: one per line for NDJSON (or a body that is
/// not an array; blank lines are no events, but indexes stay line numbers from 0), else the
/// elements of a JSON array.
pub fn split_batch(text: &str, ndjson: bool) -> Result<Vec<(usize, &str)>, String> {
    if ndjson || !text.trim_start().starts_with('[') {
        return Ok(text
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .collect());
    }
    serde_json::from_str::<Vec<&RawValue>>(text)
        .map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (i, item.get()))
                .collect()
        })
        .map_err(|e| format!("the body is not a JSON array of events ({e}); send an array, or one event per line with Content-Type: application/x-ndjson"))
}

async fn batch(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text".into());
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("ndjson") || v.contains("jsonl"));
    let envelopes: Vec<(usize, Envelope)> = match split_batch(text, ndjson) {
        Ok(items) => items
            .into_iter()
            .map(|(i, item)| (i, Envelope::Text(item)))
            .collect(),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match ingest.take(envelopes).await {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(refusal) => refusal.response(),
    }
}

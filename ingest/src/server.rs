//! The ingest HTTP API.
//!
//! - `POST /api/v1/events`: one envelope `{"type": "click", "event": {...}}`.
//! - `POST /api/v1/events/batch`: a JSON array of envelopes, or one envelope per line
//!   (`Content-Type: application/x-ndjson`; a broken line is refused alone).
//! - `GET /api/v1/health`.
//!
//! Posting needs a producer key ([`crate::access`]): 401 without one, before the body is read.
//! A key over its rate gets 429 with `Retry-After`, and nothing of that request is stored.
//!
//! Every event is validated against its schema. Valid events are appended to their type's
//! topic, refused ones to the dead-letter topic with the reason and the original text, and the
//! answer comes only once the broker has acknowledged all of them:
//! `{"accepted": 2, "rejected": [{"index": 1, "reason": "..."}]}` (200, also when some were
//! refused; 422 for a single refused event). If Kafka fails, the answer is 503 and nothing is
//! acknowledged: the client sends again, so an event is never lost (it may be stored twice;
//! the warehouse's fact tables are keyed by event id).

use crate::access::{Access, Caller, KeyRole, Throttled};
use crate::catalog::Catalog;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
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
    /// Creates the catalog's topics that do not exist yet (with `partitions` partitions) and
    /// opens the producer's queue of each partition, so that a request's events are enqueued,
    /// and appended, in their order from the first request on.
    pub async fn new(
        catalog: Catalog,
        producer: Arc<Producer>,
        partitions: i32,
    ) -> Result<Ingest, eddy_kafka::KafkaError> {
        for (topic, n) in catalog.topic_partitions(partitions) {
            producer.kafka().ensure_topic(topic, n).await?;
            producer.prepare(topic).await?;
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

    /// The API's routes. With `access`, posting events needs a producer key (the health check
    /// stays open); without, anyone who reaches the port may post (`eddy serve --insecure`).
    pub fn router(self, access: Option<Access>) -> Router {
        let mut events = Router::new()
            .route("/api/v1/events", post(single))
            .route("/api/v1/events/batch", post(batch));
        if let Some(access) = access {
            events = events.route_layer(axum::middleware::from_fn_with_state(
                (access, KeyRole::Producer),
                crate::access::require,
            ));
        }
        events
            .route("/api/v1/health", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// Validates, appends and acknowledges a list of envelopes.
    /// `envelopes` come with their index in the request, which a rejection names.
    async fn take(
        &self,
        caller: Option<&Caller>,
        envelopes: Vec<(usize, Envelope<'_>)>,
    ) -> Result<Outcome, Refusal> {
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
        // Last, so that a request refused for its size costs the key nothing.
        if let Some(caller) = caller {
            match caller.take(envelopes.len()) {
                Ok(()) => {}
                Err(Throttled::TooMany { rate }) => {
                    return Err(Refusal::TooLarge(format!(
                        "{} events in one request, but the key `{}` may post {rate} a second: split the batch",
                        envelopes.len(),
                        caller.name
                    )))
                }
                Err(Throttled::Wait(wait)) => {
                    return Err(Refusal::Throttled(caller.name.clone(), wait))
                }
            }
        }
        self.store(caller, envelopes)
            .await
            .map_err(Refusal::Unavailable)
    }

    async fn store(
        &self,
        caller: Option<&Caller>,
        envelopes: Vec<(usize, Envelope<'_>)>,
    ) -> Result<Outcome, String> {
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
        let key = caller.map_or(String::new(), |c| c.name.clone());
        metrics::counter!("eddy_ingest_events_accepted_total", "key" => key.clone())
            .increment(accepted);
        metrics::counter!("eddy_ingest_events_rejected_total", "key" => key)
            .increment(rejected.len() as u64);
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
    /// The key (named) is over its rate: 429, send again after the wait.
    Throttled(String, std::time::Duration),
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::TooLarge(reason) => error(StatusCode::PAYLOAD_TOO_LARGE, reason),
            Refusal::Unavailable(e) => unavailable(e),
            Refusal::Throttled(key, wait) => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "the key `{key}` is over its rate; nothing was stored: send again in {} ms",
                        wait.as_millis()
                    ),
                );
                // Whole seconds, rounded up, as the header wants.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.max(1).into());
                response
            }
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

/// The producer a request was authenticated as, if the server checks keys.
type Authenticated = Option<Extension<Arc<Caller>>>;

async fn single(State(ingest): State<Ingest>, caller: Authenticated, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => Envelope::Text(t.trim()),
        Err(e) => Envelope::Broken("", format!("not UTF-8: {e}")),
    };
    match ingest
        .take(caller.as_deref().map(|c| &**c), vec![(0, text)])
        .await
    {
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

async fn batch(
    State(ingest): State<Ingest>,
    caller: Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    match ingest
        .take(caller.as_deref().map(|c| &**c), envelopes)
        .await
    {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(refusal) => refusal.response(),
    }
}

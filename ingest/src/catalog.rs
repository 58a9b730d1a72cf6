//! The event types Eddy accepts, their schemas and where each goes.
//!
//! An event arrives wrapped in an envelope that names its type:
//! `{"type": "click", "event": {...}}`. The catalog checks the envelope, validates the event
//! against its type's JSON Schema (`jobs/ecommerce/schemas/`, the one definition of the
//! events) and says which Kafka topic it goes to and under which key. Keys keep one session's
//! events (or one currency's rates) in one partition, so they stay in order. The payload sent
//! on is the event's own JSON text, byte for byte.

use crate::schema::{Schema, SchemaError};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One accepted event type.
#[derive(Debug)]
pub struct EventType {
    /// The envelope's `type`.
    pub name: &'static str,
    /// The Kafka topic its events go to, with the deployment's prefix (`shop.clicks`).
    pub topic: String,
    /// The field whose value is the Kafka key.
    pub key_field: &'static str,
    /// Partitions of its topic when it is created; `None`: the deployment's default.
    pub partitions: Option<i32>,
    schema: Schema,
}

/// The event types of a deployment and its dead-letter topic.
#[derive(Debug)]
pub struct Catalog {
    types: Vec<EventType>,
    dead_letter_topic: String,
}

/// An event that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct Routed<'a> {
    /// Index into [`Catalog::types`].
    pub kind: usize,
    /// The Kafka topic to send the payload to.
    pub topic: &'a str,
    /// The Kafka key: the value of the type's key field, which keeps a session's events in
    /// one partition, in order.
    pub key: String,
    /// The event's JSON text as received.
    pub payload: &'a str,
}

/// The Kafka record an envelope becomes, the same whoever writes the topics (the ingest API,
/// or the generator straight into Kafka or into files that stand for the topics).
#[derive(Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    /// The event type's topic, or the dead-letter topic.
    pub topic: &'a str,
    /// The partitioning key; dead letters have none.
    pub key: Option<String>,
    /// The event's JSON as received, or the dead-letter record.
    pub value: std::borrow::Cow<'a, str>,
}

/// Why an event was refused: shown to the client and kept in the dead-letter topic.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The envelope's type when it could be read.
    pub kind: Option<String>,
    /// One line for a person: what is wrong and, where it helps, what to send instead.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// The e-commerce schemas, compiled into the binary from their one place in the repository:
/// (type, topic, key field, partitions, schema). Currency rates get one partition: a handful
/// of currencies over many partitions would leave some partitions empty, and an empty partition
/// holds back the watermark of the topic (Flink's per-partition watermarks behave the same).
const ECOMMERCE: [(&str, &str, &str, Option<i32>, &str); 4] = [
    (
        "click",
        "clicks",
        "session_id",
        None,
        include_str!("../../jobs/ecommerce/schemas/click.json"),
    ),
    (
        "cart",
        "carts",
        "session_id",
        None,
        include_str!("../../jobs/ecommerce/schemas/cart.json"),
    ),
    (
        "purchase",
        "purchases",
        "session_id",
        None,
        include_str!("../../jobs/ecommerce/schemas/purchase.json"),
    ),
    (
        "currency_rate",
        "currency_rates",
        "currency",
        Some(1),
        include_str!("../../jobs/ecommerce/schemas/currency_rate.json"),
    ),
];

impl Catalog {
    /// The e-commerce event types, with topics `<prefix>.clicks`, `<prefix>.carts`,
    /// `<prefix>.purchases`, `<prefix>.currency_rates` and `<prefix>.dead_letter`.
    pub fn ecommerce(topic_prefix: &str) -> Result<Catalog, SchemaError> {
        let types = ECOMMERCE
            .iter()
            .map(|(name, topic, key_field, partitions, text)| {
                Ok(EventType {
                    name,
                    topic: format!("{topic_prefix}.{topic}"),
                    key_field,
                    partitions: *partitions,
                    schema: Schema::parse(&format!("{name}.json"), text)?,
                })
            })
            .collect::<Result<Vec<_>, SchemaError>>()?;
        Ok(Catalog {
            types,
            dead_letter_topic: format!("{topic_prefix}.dead_letter"),
        })
    }

    /// The accepted types, in a fixed order that [`Routed::kind`] indexes.
    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    /// Every topic the catalog writes, the dead-letter topic last.
    pub fn topics(&self) -> Vec<&str> {
        self.types
            .iter()
            .map(|t| t.topic.as_str())
            .chain([self.dead_letter_topic.as_str()])
            .collect()
    }

    /// Every topic with the partitions to create it with (`default` unless its type says).
    pub fn topic_partitions(&self, default: i32) -> Vec<(&str, i32)> {
        self.types
            .iter()
            .map(|t| (t.topic.as_str(), t.partitions.unwrap_or(default)))
            .chain([(self.dead_letter_topic.as_str(), default)])
            .collect()
    }

    /// Where refused events go, as [`dead_letter_record`]s, so none is lost silently.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// The record to store for an envelope: its event, or, refused, its dead-letter record
    /// (`received_at`, RFC 3339, is asked for only then), with the reason for the answer.
    pub fn store<'a>(
        &'a self,
        envelope: &'a str,
        received_at: impl FnOnce() -> String,
    ) -> (Stored<'a>, Option<Rejection>) {
        match self.route(envelope) {
            Ok(r) => (
                Stored {
                    topic: r.topic,
                    key: Some(r.key),
                    value: r.payload.into(),
                },
                None,
            ),
            Err(rejection) => {
                let stored = self.dead_letter(&rejection, envelope, &received_at());
                (stored, Some(rejection))
            }
        }
    }

    /// The dead-letter record of a refused envelope.
    pub fn dead_letter(
        &self,
        rejection: &Rejection,
        original: &str,
        received_at: &str,
    ) -> Stored<'_> {
        Stored {
            topic: &self.dead_letter_topic,
            key: None,
            value: dead_letter_record(rejection, original, received_at).into(),
        }
    }

    /// Checks one envelope and says where its event goes.
    pub fn route<'a>(&'a self, envelope: &'a str) -> Result<Routed<'a>, Rejection> {
        let reject = |kind: Option<&str>, reason: String| Rejection {
            kind: kind.map(str::to_string),
            reason,
        };
        let parsed: Envelope<'a> = serde_json::from_str(envelope).map_err(|e| {
            let reason = if e.is_syntax() || e.is_eof() {
                format!("not valid JSON: {e}")
            } else {
                format!(
                    "not an event envelope ({e}); send {{\"type\": \"click\", \"event\": {{...}}}}"
                )
            };
            reject(None, reason)
        })?;
        let Some(kind) = self.types.iter().position(|t| t.name == parsed.kind) else {
            let names: Vec<&str> = self.types.iter().map(|t| t.name).collect();
            return Err(reject(
                Some(&parsed.kind),
                format!(
                    "unknown event type `{}`; the types are {}",
                    parsed.kind,
                    names.join(", ")
                ),
            ));
        };
        let t = &self.types[kind];
        let payload = parsed.event.get();
        let value: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| reject(Some(t.name), format!("not valid JSON: {e}")))?;
        if let Some(violation) = t.schema.validate(&value) {
            return Err(reject(
                Some(t.name),
                format!("{} event: {violation}", t.name),
            ));
        }
        let key = value[t.key_field].as_str().unwrap_or_default().to_string();
        Ok(Routed {
            kind,
            topic: &t.topic,
            key,
            payload,
        })
    }
}

/// The dead-letter record of a refused event: the reason, the type if known, the original
/// text and when it was received (RFC 3339).
pub fn dead_letter_record(rejection: &Rejection, original: &str, received_at: &str) -> String {
    serde_json::json!({
        "reason": rejection.reason,
        "type": rejection.kind,
        "payload": original,
        "received_at": received_at,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::ecommerce("shop").unwrap()
    }

    #[test]
    fn the_shipped_schemas_compile_and_route_valid_events() {
        let c = catalog();
        let click = r#"{"type":"click","event":{"event_id":"c1","user_id":"u1","session_id":"s1","product_id":"p1","ts":"2026-01-01T00:00:00.000Z","page":"product","referrer":null}}"#;
        let routed = c.route(click).unwrap();
        assert_eq!(routed.topic, "shop.clicks");
        assert_eq!(routed.key, "s1");
        assert!(routed.payload.starts_with("{\"event_id\":\"c1\""));
        let rate = r#"{"type":"currency_rate","event":{"currency":"EUR","rate_to_usd":1.08,"ts":"2026-01-01T00:00:00Z"}}"#;
        assert_eq!(c.route(rate).unwrap().key, "EUR");
        assert_eq!(
            c.topics(),
            vec![
                "shop.clicks",
                "shop.carts",
                "shop.purchases",
                "shop.currency_rates",
                "shop.dead_letter"
            ]
        );
    }

    #[test]
    fn every_generated_event_is_routed_and_every_malformed_one_refused() {
        let c = catalog();
        let config = eddy_gen::Config {
            seed: 11,
            rate: 100.0,
            duration: Some(120_000),
            malformed_share: 0.05,
            ..eddy_gen::Config::default()
        };
        let (mut valid, mut malformed) = (0, 0);
        for sent in eddy_gen::Generator::new(config) {
            match (&sent.fate, c.route(&sent.envelope)) {
                (eddy_gen::Fate::Valid { .. }, Ok(r)) => {
                    assert_eq!(c.types()[r.kind].name, sent.kind.name());
                    assert_eq!(r.key, sent.key);
                    valid += 1;
                }
                (eddy_gen::Fate::Malformed { flaw }, Err(rejection)) => {
                    assert!(!rejection.reason.is_empty(), "{flaw}");
                    malformed += 1;
                }
                (fate, result) => panic!("{fate:?} of {} gave {result:?}", sent.envelope),
            }
        }
        assert!(valid > 10_000 && malformed > 300, "{valid} {malformed}");
    }

    #[test]
    fn refusals_say_why() {
        let c = catalog();
        let reason = |text: &str| c.route(text).unwrap_err().reason;
        assert!(reason("{\"type\":").starts_with("not valid JSON"));
        assert!(reason(r#"{"kind":"click"}"#).contains("not an event envelope"));
        assert!(reason(r#"{"type":"clik","event":{}}"#).contains(
            "unknown event type `clik`; the types are click, cart, purchase, currency_rate"
        ));
        let r = reason(
            r#"{"type":"cart","event":{"event_id":"a","user_id":"u","session_id":"s","product_id":"p","quantity":0,"ts":"2026-01-01T00:00:00Z"}}"#,
        );
        assert_eq!(r, "cart event: /quantity: 0 is less than the minimum of 1");
        let record = dead_letter_record(
            &Rejection {
                kind: None,
                reason: "x".into(),
            },
            "{bad",
            "2026-01-01T00:00:00.000Z",
        );
        let v: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(v["payload"], "{bad");
    }
}

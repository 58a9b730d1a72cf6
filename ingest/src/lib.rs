//! Ingest: events in over HTTP, validated, out to Kafka.
//!
//! [`catalog`] knows the event types (their JSON Schemas, topics and partition keys) and
//! routes one envelope; [`schema`] is the JSON Schema validator behind it.

pub mod catalog;
pub mod schema;

pub use catalog::{dead_letter_record, Catalog, EventType, Rejection, Routed};

//! Ingest: events in over HTTP, validated, out to Kafka.
//!
//! [`access`] decides who may post events or see the dashboard (API keys, rates);
//! [`catalog`] knows the event types (their JSON Schemas, topics and partition keys) and
//! routes one envelope; [`schema`] is the JSON Schema validator behind it; [`server`] is the
//! HTTP API that appends accepted events to Kafka and acknowledges them once the broker has
//! them.

pub mod access;
pub mod catalog;
pub mod schema;
pub mod server;

pub use catalog::{dead_letter_record, Catalog, EventType, Rejection, Routed, Stored};
pub use server::{Ingest, IngestStats};

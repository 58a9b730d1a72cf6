//! `eddy gen ecommerce`: a shop's traffic, reproducible from a seed, and its ground truth.
//!
//! [`Generator`] simulates shoppers' sessions in event time (views, carts, purchases, currency
//! rates) and yields the lines a collector would send, with a configurable share of malformed
//! and late events and injected anomalies. [`Truth`] computes, from the same events, the exact
//! KPIs, alerts and totals the e-commerce jobs must write, so that tests check the whole path
//! (ingest, Kafka, the jobs, PostgreSQL) against an independent oracle.

pub mod config;
pub mod rng;
pub mod stream;
pub mod truth;

pub use config::{Anomaly, AnomalyKind, Config, ConfigError, Currency, CURRENCIES};
pub use stream::{Event, EventKind, Fate, Generator, Sent};
pub use truth::{Detector, Expected, Truth};

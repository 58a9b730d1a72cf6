//! What a chaos run checks: a job file against a reference answer (Nexmark queries against
//! Flink's), or the e-commerce pipeline (the shop's traffic in Kafka, the analytics job, its
//! PostgreSQL warehouse) against the generator's ground truth. The shop scenario also runs the
//! dependencies whose restarts are faults of their own.

use crate::ChaosError;
use eddy_kafka::testing::{Broker, Storage};
use eddy_postgres::testing::PgServer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A job file with its parameters and the rows it must commit.
#[derive(Clone, Debug)]
pub struct JobScenario {
    pub job: PathBuf,
    /// `NAME=VALUE` parameters; `output` is set by the harness (one directory per round).
    pub params: Vec<(String, String)>,
    /// The reference: the rows the committed output must hold (JSON lines, `.gz` allowed).
    pub expected: PathBuf,
    /// Input records per second each source reads (wall clock).
    pub max_rate: u64,
    /// Records in the input, for the time a round takes.
    pub input_records: u64,
}

/// The e-commerce pipeline: each round generates a shop's traffic into its own Kafka topics,
/// runs the analytics job into its own warehouse database, and compares the warehouse with
/// the generator's ground truth.
#[derive(Clone, Debug)]
pub struct ShopScenario {
    /// The analytics job (jobs/ecommerce/analytics.toml).
    pub job: PathBuf,
    /// Arguments of `eddy gen ecommerce` for each round's traffic (seed, volume, anomalies).
    pub generate: Vec<String>,
    /// Records per second each source reads (wall clock).
    pub max_rate: u64,
    /// Events a round generates, for the time a round takes.
    pub events: u64,
}

/// What a run checks.
#[derive(Clone, Debug)]
pub enum Scenario {
    Job(JobScenario),
    Shop(ShopScenario),
}

impl Scenario {
    /// The job file.
    pub fn job(&self) -> &Path {
        match self {
            Scenario::Job(j) => &j.job,
            Scenario::Shop(s) => &s.job,
        }
    }

    /// Whether PostgreSQL and Kafka run beside the cluster (and can be restarted).
    /// The directories of the files the job reads (parameters that name existing paths):
    /// the cluster must allow them (`--allow-path`).
    pub fn input_dirs(&self) -> Vec<PathBuf> {
        let Scenario::Job(j) = self else {
            return Vec::new();
        };
        j.params
            .iter()
            .map(|(_, v)| Path::new(v))
            .filter(|p| p.exists())
            .filter_map(|p| match p.is_dir() {
                true => Some(p.to_path_buf()),
                false => p.parent().map(|d| match d.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => d.to_path_buf(),
                }),
            })
            .collect()
    }

    pub fn has_dependencies(&self) -> bool {
        matches!(self, Scenario::Shop(_))
    }

    /// Records each source reads per second.
    pub fn max_rate(&self) -> u64 {
        match self {
            Scenario::Job(j) => j.max_rate,
            Scenario::Shop(s) => s.max_rate,
        }
    }

    /// Records a round reads (its largest source's share, roughly).
    pub fn input_records(&self) -> u64 {
        match self {
            Scenario::Job(j) => j.input_records,
            Scenario::Shop(s) => s.events,
        }
    }

    /// Parameters that let the job compile (the harness fills the real ones per round).
    fn compile_params(&self, deps: &Dependencies) -> HashMap<String, String> {
        match self {
            Scenario::Job(j) => {
                let mut params: HashMap<String, String> = j.params.iter().cloned().collect();
                params.insert("output".into(), "unused/".into());
                params
            }
            Scenario::Shop(_) => [
                ("brokers".to_string(), deps.broker_address()),
                ("warehouse".to_string(), deps.postgres_url("postgres")),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The names of the job's source nodes (their records out are its throughput).
    pub fn source_names(&self, deps: &Dependencies) -> Result<Vec<String>, ChaosError> {
        let options = eddy_jobs::CompileOptions {
            params: self.compile_params(deps).into_iter().collect(),
            ..Default::default()
        };
        let graph = eddy_jobs::compile_file(self.job(), &options)
            .map_err(|e| ChaosError::Setup(e.to_string()))?;
        Ok(graph
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, eddy_runtime::graph::NodeKind::Source(_)))
            .map(|n| n.name.clone())
            .collect())
    }
}

/// The PostgreSQL server and Kafka broker of the shop scenario, on loopback, stopped when
/// dropped. The broker keeps its records in SQLite, so that a restart loses nothing.
#[derive(Default)]
pub struct Dependencies {
    pub postgres: Option<PgServer>,
    pub broker: Option<Broker>,
}

impl Dependencies {
    /// Starts what `scenario` needs.
    pub fn start(scenario: &Scenario) -> Result<Dependencies, ChaosError> {
        if !scenario.has_dependencies() {
            return Ok(Dependencies::default());
        }
        let postgres = PgServer::start().map_err(ChaosError::Setup)?;
        let broker = Broker::start_with(Storage::Sqlite).map_err(ChaosError::Setup)?;
        Ok(Dependencies {
            postgres: Some(postgres),
            broker: Some(broker),
        })
    }

    pub fn broker_address(&self) -> String {
        self.broker
            .as_ref()
            .map(Broker::address)
            .unwrap_or_default()
    }

    /// The URL of database `db` on the server.
    pub fn postgres_url(&self, db: &str) -> String {
        self.postgres
            .as_ref()
            .map(|p| p.url().replace("/postgres", &format!("/{db}")))
            .unwrap_or_default()
    }
}

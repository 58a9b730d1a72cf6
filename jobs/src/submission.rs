//! A job as submitted to a cluster: the job file's text and the run settings, everything any
//! node needs to compile the same [`JobGraph`] again. Coordinators replicate it; workers compile
//! it when a deployment reaches them. Compilation is deterministic, so every node numbers nodes
//! and tasks the same way.

use crate::{compile_str, CompileOptions, JobError};
use eddy_runtime::graph::{GeneratorSpec, JobGraph};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a user submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Submission {
    /// The job file's text (TOML) and its path, for messages.
    pub job_text: String,
    pub job_path: String,
    pub params: BTreeMap<String, String>,
    /// Overrides the job's parallelism.
    pub parallelism: Option<u32>,
    /// 0: no checkpoints.
    pub checkpoint_interval_ms: u64,
    /// Where checkpoints go; must be reachable from every worker and coordinator (a shared
    /// directory, as Flink needs a shared file system or object store).
    pub checkpoint_dir: String,
    pub retain_checkpoints: u32,
    /// Replace Nexmark file sources with the generator making this many events.
    pub generate_events: Option<u64>,
    pub generate_rate: u64,
    /// Rows per second each source emits at most (a live replay); `None`: unpaced.
    #[serde(default)]
    pub max_source_rate: Option<u64>,
    /// Kafka sources read their topics from files in this directory (reprocessing).
    #[serde(default)]
    pub topics_from: Option<String>,
    /// Secret parameters, sealed with the cluster's key (`eddy_security::secrets`): kept
    /// sealed in the replicated state, opened by the leader to compile and deploy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sealed_params: BTreeMap<String, String>,
}

impl Submission {
    /// This submission with its sealed parameters opened (by `open(name, sealed)`) into its
    /// parameters: what compiles and what workers get.
    pub fn unsealed<E>(
        &self,
        open: impl Fn(&str, &str) -> Result<String, E>,
    ) -> Result<Submission, E> {
        let mut s = self.clone();
        for (name, sealed) in std::mem::take(&mut s.sealed_params) {
            s.params.insert(name.clone(), open(&name, &sealed)?);
        }
        Ok(s)
    }

    /// The job graph, as `eddy run` would build it from the same file and flags.
    pub fn compile(&self) -> Result<JobGraph, JobError> {
        let options = CompileOptions {
            params: self.params.clone(),
            parallelism: self.parallelism,
            generate: self.generate_events.map(|events| GeneratorSpec {
                events: Some(events),
                rate: self.generate_rate.max(1),
                base_time: crate::DEFAULT_NEXMARK_BASE_TIME,
                throttle: false,
            }),
            topic_files: self.topics_from.as_ref().map(std::path::PathBuf::from),
        };
        compile_str(&self.job_path, &self.job_text, &options)
    }
}

//! Job definitions: the TOML job file format and its compiler to a validated
//! [`eddy_runtime::graph::JobGraph`]. The Nexmark and e-commerce job files live beside this crate
//! (`jobs/nexmark/*.toml`); docs/job-format.md documents the format.

mod compile;
pub mod ecommerce;
pub mod error;
mod spec;
mod submission;

pub use compile::{compile_file, compile_str, secret_params, CompileOptions};
pub use error::JobError;
pub use submission::Submission;

use eddy_runtime::graph::{FileFormat, GeneratorSpec, JobGraph, NodeKind, SourceConnector};

/// Event time of the first event of the shared Nexmark data (2026-01-01 00:00:00 UTC).
pub const DEFAULT_NEXMARK_BASE_TIME: i64 = 1_767_225_600_000;

/// Replaces every Nexmark file source of a compiled job with the built-in generator, keeping
/// the source's name, ports and watermarks: the same job then runs on generated events (the
/// generator reproduces the shared data file exactly for the same settings). Returns how many
/// sources were replaced.
pub fn use_nexmark_generator(graph: &mut JobGraph, spec: GeneratorSpec) -> usize {
    let mut replaced = 0;
    for node in &mut graph.nodes {
        if let NodeKind::Source(source) = &mut node.kind {
            if let SourceConnector::File {
                format: FileFormat::Nexmark,
                ..
            } = source.connector
            {
                source.connector = SourceConnector::NexmarkGenerator(spec.clone());
                replaced += 1;
            }
        }
    }
    replaced
}

/// Replaces every Kafka source of a compiled job with a file source reading what the topic
/// holds from `dir`: `<topic>.jsonl`, `<topic>.jsonl.gz` or a directory `<topic>/` (what `eddy
/// gen ecommerce --to file:DIR` writes, or an archive of the topic). The same job then
/// reprocesses history as a bounded run, with the same parsing, watermarks and operators.
/// Returns how many sources were replaced, or the topic that has no file.
pub fn use_topic_files(graph: &mut JobGraph, dir: &std::path::Path) -> Result<usize, String> {
    let mut replaced = 0;
    for node in &mut graph.nodes {
        if let NodeKind::Source(source) = &mut node.kind {
            if let SourceConnector::Kafka(kafka) = &source.connector {
                let candidates = [
                    dir.join(format!("{}.jsonl", kafka.topic)),
                    dir.join(format!("{}.jsonl.gz", kafka.topic)),
                    dir.join(&kafka.topic),
                ];
                let Some(path) = candidates.iter().find(|p| p.exists()) else {
                    return Err(format!(
                        "source `{}`: no file for topic `{}` in `{}` (expected {t}.jsonl, {t}.jsonl.gz or a directory {t}/)",
                        node.name,
                        kafka.topic,
                        dir.display(),
                        t = kafka.topic
                    ));
                };
                source.connector = SourceConnector::File {
                    path: path.display().to_string(),
                    format: kafka.format.clone(),
                };
                replaced += 1;
            }
        }
    }
    Ok(replaced)
}
pub mod compare;

//! Job definitions: the TOML job file format and its compiler to a validated
//! [`eddy_runtime::graph::JobGraph`]. The Nexmark and e-commerce job files live beside this crate
//! (`jobs/nexmark/*.toml`); docs/job-format.md documents the format.

mod compile;
pub mod error;
mod spec;
mod submission;

pub use compile::{compile_file, compile_str, CompileOptions};
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
pub mod compare;

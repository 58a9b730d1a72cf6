//! Record formats: how events get into Eddy and results get out.
//!
//! - [`NexmarkParser`] reads the nested Nexmark JSON-lines layout of the shared input files;
//!   [`event_to_row`] and [`generator_config`] produce the same rows from the built-in generator.
//! - [`JsonParser`] reads generic JSON lines against a declared schema.
//! - [`write_json_row`] writes result rows exactly as Flink's expected files show them.
//!
//! Parsers never panic on bad input: they return a [`FormatError`] that names the field, the
//! expected type and what was found, so that a bad line can be reported (or skipped) by the
//! source without stopping the job.

mod json;
mod nexmark;
mod scanner;
#[cfg(test)]
mod tests;
mod writer;

pub use self::json::{JsonColumn, JsonParser};
pub use self::nexmark::{
    event_to_json_line, event_to_row, generator_config, write_nexmark_events, NexmarkParser,
    NexmarkTable,
};
pub use self::writer::{write_json_row, write_json_string, write_json_value};

/// Why a line could not be parsed. A plain message, because the source's only job with it is to
/// report it (with the file and line number it knows and the parser does not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

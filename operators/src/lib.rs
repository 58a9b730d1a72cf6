//! Eddy's operators, sources and sinks.

pub mod format;

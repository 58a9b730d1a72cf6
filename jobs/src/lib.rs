//! Job definitions.

//! The expression language (placeholder: being written).

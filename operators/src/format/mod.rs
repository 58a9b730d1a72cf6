//! Record formats (placeholder: being written).

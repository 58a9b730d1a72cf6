//! Conversions between the wire types and the runtime's, kept here so that `eddy-runtime`
//! knows nothing of protobuf (openraft's `pb_impl` does the same).

mod fault_domain;

pub use fault_domain::{domain_of, status_of};

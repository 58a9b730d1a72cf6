//! Eddy's wire protocol. `proto/eddy.proto` is the source of truth; this crate holds the code
//! tonic and prost generate from it, plus [`net`], the single place where gRPC clients and
//! servers are configured (timeouts, message sizes, and later TLS and auth).

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("eddy.v1");
}

pub mod convert;
pub mod leader;
pub mod net;

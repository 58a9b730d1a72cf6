//! Eddy's dataflow core.
//!
//! `runtime` owns the vocabulary every other crate speaks (values, schemas, expressions, the job
//! graph, stream elements, state) and the executor that runs tasks on threads. It knows no concrete
//! operator and no transport, so the cluster can later move the same tasks into actors and over gRPC.

pub mod checkpoint;
pub mod dirlock;
pub mod element;
pub mod error;
pub mod exec;
pub mod expr;
pub mod faults;
pub mod graph;
pub mod keygroup;
pub mod operator;
pub mod state;
pub mod types;

//! The coordinator's errors, each with whose fault it is, and their one mapping to a gRPC
//! status ([`CoordinatorError::status`]).

use crate::raft::ProposeError;
use eddy_runtime::checkpoint::CheckpointError;
use eddy_runtime::error::FaultDomain;

/// A coordinator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The job cannot be compiled or does not fit the request (the user's to fix).
    #[error("{0}")]
    Job(String),
    /// A Raft proposal was refused or could not be made.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A worker did not do what it was asked.
    #[error("worker at {addr}: {message}")]
    Worker {
        addr: String,
        message: String,
        domain: FaultDomain,
    },
    /// The operation does not fit the job's state ("not running", "already cancelled").
    #[error("{0}")]
    State(String),
    /// The job's driver is gone (leadership changed under the request).
    #[error("the coordinator leader changed while handling the request; retry")]
    LeaderChanged,
}

/// Shorthand for the coordinator's results.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

impl CoordinatorError {
    /// Whose fault it is.
    pub fn domain(&self) -> FaultDomain {
        match self {
            CoordinatorError::Job(_) | CoordinatorError::State(_) => FaultDomain::User,
            CoordinatorError::Propose(ProposeError::Rejected(_)) => FaultDomain::User,
            CoordinatorError::Propose(_) | CoordinatorError::LeaderChanged => {
                FaultDomain::Transient
            }
            CoordinatorError::Checkpoint(e) => e.domain(),
            CoordinatorError::Worker { domain, .. } => *domain,
        }
    }

    /// The gRPC status a client sees: one line, a code that says whether to retry.
    pub fn status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            CoordinatorError::Propose(ProposeError::NotLeader { leader }) => {
                eddy_proto::leader::not_leader(leader.as_ref().map(|(_, a)| a.clone()))
            }
            CoordinatorError::Propose(ProposeError::Rejected(_)) | CoordinatorError::State(_) => {
                tonic::Status::failed_precondition(message)
            }
            CoordinatorError::Job(_) => tonic::Status::invalid_argument(message),
            _ => match self.domain() {
                FaultDomain::Transient => tonic::Status::unavailable(message),
                FaultDomain::User => tonic::Status::failed_precondition(message),
                FaultDomain::Internal => tonic::Status::internal(message),
            },
        }
    }
}

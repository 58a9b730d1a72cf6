//! Why a worker could not deploy or commit an attempt, with whose fault it is: the leader
//! reads the domain from the gRPC status code ([`WorkerError::status`]).

use eddy_runtime::checkpoint::CheckpointError;
use eddy_runtime::error::FaultDomain;

/// A deployment or commit failed on this worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The leader sent a job this worker cannot read or compile.
    #[error("{0}")]
    Job(String),
    #[error("cannot read checkpoint {checkpoint}: {source}")]
    Restore {
        checkpoint: u64,
        #[source]
        source: CheckpointError,
    },
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    State(String),
    /// The attempt was cancelled before (or while) it was deployed.
    #[error("attempt {attempt} of {job} was cancelled")]
    Cancelled { job: String, attempt: u64 },
    /// The attempt is not deployed here (this worker restarted since, or it ended).
    #[error("attempt {attempt} of {job} is not deployed on this worker")]
    UnknownAttempt { job: String, attempt: u64 },
}

impl WorkerError {
    /// Whose fault it is.
    pub fn domain(&self) -> FaultDomain {
        match self {
            WorkerError::Job(_) => FaultDomain::User,
            WorkerError::Restore { source, .. } | WorkerError::Checkpoint(source) => {
                source.domain()
            }
            WorkerError::State(_) => FaultDomain::Internal,
            WorkerError::Cancelled { .. } | WorkerError::UnknownAttempt { .. } => {
                FaultDomain::Transient
            }
        }
    }

    /// The status a gRPC handler answers with: its code carries the domain
    /// ([`eddy_proto::convert::status_of`]); an unknown attempt is NOT_FOUND.
    pub fn status(&self) -> tonic::Status {
        match self {
            WorkerError::UnknownAttempt { .. } => tonic::Status::not_found(self.to_string()),
            _ => eddy_proto::convert::status_of(self.domain(), self.to_string()),
        }
    }
}

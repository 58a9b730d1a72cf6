//! Whose fault a failure is. Every error that can end a job's attempt says it, so that restart
//! decisions are made by type, not by reading messages: a user's mistake fails the job at once
//! with its message, a transient failure (a dependency down, a lost peer, a full disk) is
//! retried with backoff for as long as it lasts, and anything else (a bug, corrupt data) is
//! retried a bounded number of times.

use serde::{Deserialize, Serialize};

/// Whose fault a failure is, which decides what restarting can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultDomain {
    /// The job or its configuration is wrong (a bad expression, a missing table, an input
    /// that does not exist): a restart would fail the same way, so the job fails at once.
    User,
    /// Something outside the job failed and may come back (a dependency restarting, a lost
    /// worker, a network partition, a full disk): restart with backoff until it does.
    Transient,
    /// Neither: a bug or corrupt data. Restarted, but only so often within a window.
    Internal,
}

impl FaultDomain {
    /// The name used in messages and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            FaultDomain::User => "user",
            FaultDomain::Transient => "transient",
            FaultDomain::Internal => "internal",
        }
    }

    /// Of two explanations of one failure, the more telling: a user error over an internal
    /// one over a transient one (a task that lost its peer reports "transient" while the peer
    /// reports why it failed).
    pub fn most_telling(self, other: FaultDomain) -> FaultDomain {
        let rank = |d: FaultDomain| match d {
            FaultDomain::User => 2,
            FaultDomain::Internal => 1,
            FaultDomain::Transient => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// An operator, source or sink could not be built, or a completed checkpoint could not be
/// committed, with whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub message: String,
    pub domain: FaultDomain,
}

impl BuildError {
    /// A mistake in the job or its configuration (the usual reason a node cannot be built).
    pub fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            domain: FaultDomain::User,
        }
    }

    /// A failure that may pass (a dependency that cannot be reached now).
    pub fn transient(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            domain: FaultDomain::Transient,
        }
    }

    /// A failure that is nobody's configuration (corrupt state, a bug).
    pub fn internal(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            domain: FaultDomain::Internal,
        }
    }

    /// The same error with `context` in front of its message.
    pub fn context(mut self, context: impl std::fmt::Display) -> BuildError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_telling_domain_wins() {
        use FaultDomain::*;
        assert_eq!(Transient.most_telling(User), User);
        assert_eq!(User.most_telling(Transient), User);
        assert_eq!(Transient.most_telling(Internal), Internal);
        assert_eq!(Internal.most_telling(Transient), Internal);
    }
}

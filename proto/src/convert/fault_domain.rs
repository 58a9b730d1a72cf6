//! [`FaultDomain`] on the wire.

use crate::v1;
use eddy_runtime::error::FaultDomain;

impl From<FaultDomain> for v1::FaultDomain {
    fn from(d: FaultDomain) -> Self {
        match d {
            FaultDomain::User => v1::FaultDomain::User,
            FaultDomain::Transient => v1::FaultDomain::Transient,
            FaultDomain::Internal => v1::FaultDomain::Internal,
        }
    }
}

impl From<v1::FaultDomain> for FaultDomain {
    /// An unspecified domain (an older worker) counts as internal: retried, but not forever.
    fn from(d: v1::FaultDomain) -> Self {
        match d {
            v1::FaultDomain::User => FaultDomain::User,
            v1::FaultDomain::Transient => FaultDomain::Transient,
            v1::FaultDomain::Internal | v1::FaultDomain::Unspecified => FaultDomain::Internal,
        }
    }
}

impl v1::AttemptEndedRequest {
    /// The domain of the failure this report carries.
    pub fn fault_domain(&self) -> FaultDomain {
        v1::FaultDomain::try_from(self.domain)
            .unwrap_or(v1::FaultDomain::Unspecified)
            .into()
    }
}

/// A failure of `domain` as a gRPC status: its code carries the domain (user:
/// FAILED_PRECONDITION, transient: ABORTED, internal: INTERNAL). UNAVAILABLE is left to the
/// transport (the peer cannot be reached).
pub fn status_of(domain: FaultDomain, message: impl Into<String>) -> tonic::Status {
    match domain {
        FaultDomain::User => tonic::Status::failed_precondition(message),
        FaultDomain::Transient => tonic::Status::aborted(message),
        FaultDomain::Internal => tonic::Status::internal(message),
    }
}

/// The domain a peer's answer says, as [`status_of`] encodes it; transport failures
/// (unreachable, timed out) and anything else are transient.
pub fn domain_of(status: &tonic::Status) -> FaultDomain {
    match status.code() {
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => FaultDomain::User,
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            FaultDomain::Internal
        }
        _ => FaultDomain::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_round_trip_and_unknown_ones_are_internal() {
        for d in [
            FaultDomain::User,
            FaultDomain::Transient,
            FaultDomain::Internal,
        ] {
            assert_eq!(FaultDomain::from(v1::FaultDomain::from(d)), d);
        }
        let report = v1::AttemptEndedRequest {
            domain: 99,
            ..Default::default()
        };
        assert_eq!(report.fault_domain(), FaultDomain::Internal);
        for d in [
            FaultDomain::User,
            FaultDomain::Transient,
            FaultDomain::Internal,
        ] {
            assert_eq!(domain_of(&status_of(d, "x")), d);
        }
        assert_eq!(
            domain_of(&tonic::Status::unavailable("gone")),
            FaultDomain::Transient
        );
    }
}

//! The roles a certificate grants, and reading them from a peer's certificate.

use crate::SecurityError;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a certificate's holder may do. A certificate carries one or more roles as URIs in its
/// subject alternative names (`urn:eddy:role:worker`), next to the DNS names and addresses a
/// server certificate needs; rustls has verified the chain before any role is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Votes in Raft, deploys, triggers and commits on workers.
    Coordinator,
    /// Registers and heartbeats with the coordinators, exchanges records with other workers.
    Worker,
    /// Calls the client API (`eddy submit`, `eddy status`, the chaos harness).
    Client,
}

const PREFIX: &str = "urn:eddy:role:";

impl Role {
    pub const ALL: [Role; 3] = [Role::Coordinator, Role::Worker, Role::Client];

    pub fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    pub fn parse(text: &str) -> Result<Role, SecurityError> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                SecurityError::Invalid(format!(
                    "unknown role `{text}` (expected coordinator, worker or client)"
                ))
            })
    }

    /// The subject alternative name that grants this role.
    pub fn uri(self) -> String {
        format!("{PREFIX}{}", self.name())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A peer as its (verified) certificate names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The certificate's common name (`worker-3`), for logs and errors.
    pub name: String,
    pub roles: Vec<Role>,
}

impl Peer {
    /// Reads a DER certificate that the TLS layer has already verified.
    pub fn from_der(der: &[u8]) -> Result<Peer, SecurityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
            SecurityError::Invalid(format!("the peer's certificate cannot be read: {e}"))
        })?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("(no common name)")
            .to_string();
        let mut roles = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(uri) = n {
                    if let Some(role) = uri.strip_prefix(PREFIX) {
                        if let Ok(r) = Role::parse(role) {
                            roles.push(r);
                        }
                    }
                }
            }
        }
        roles.sort();
        roles.dedup();
        Ok(Peer { name, roles })
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

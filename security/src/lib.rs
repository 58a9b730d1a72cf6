//! Who may talk to an Eddy node.
//!
//! Every node-to-node connection (Raft, worker control, heartbeats, the record exchange) and
//! every client connection is mutual TLS: both ends present a certificate that chains to the
//! cluster's CA. What a peer may call is decided by the roles its certificate carries
//! ([`Role`], a URI in the certificate's subject alternative names), so a worker's certificate
//! cannot vote in Raft or deploy tasks, and a client's cannot pose as a worker.
//!
//! - [`certs`] makes the CA and the certificates (`eddy certs init`, `eddy certs issue`);
//! - [`tls`] loads a node's certificate directory into rustls configurations;
//! - [`role`] reads the roles out of a verified peer certificate;
//! - [`accept`] takes TLS connections on a port, each handshake on a task of its own.

pub mod accept;
pub mod certs;
pub mod paths;
pub mod role;
pub mod secrets;
pub mod tls;
pub mod token;

pub use role::{Peer, Role};
pub use tls::NodeTls;

use std::path::PathBuf;

/// A certificate or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not a usable {what}: {reason}", path.display())]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

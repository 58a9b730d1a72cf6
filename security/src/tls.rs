//! A node's TLS material, loaded from its certificate directory (see [`crate::certs`]).

use crate::{Peer, SecurityError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a node presents and whom it trusts: `ca.pem`, `node.pem` and `node.key` of one
/// directory. Loaded again on SIGHUP, so certificates are renewed without a restart.
#[derive(Clone)]
pub struct NodeTls {
    pub dir: PathBuf,
    /// Who this node is, as its own certificate says.
    pub identity: Peer,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
    /// The same, with the client's certificate optional: for the client API's own port,
    /// where a token may stand in for it.
    server_optional: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("dir", &self.dir)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads and checks the directory: every file present and parseable, the key matching
    /// the certificate.
    pub fn load(dir: &Path) -> Result<NodeTls, SecurityError> {
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| SecurityError::Io {
                action: "read",
                path,
                source,
            })
        };
        let ca_pem = file("ca.pem")?;
        let cert_pem = file("node.pem")?;
        let key_pem = file("node.key")?;
        let bad = |name: &str, what: &'static str, reason: String| SecurityError::BadFile {
            path: dir.join(name),
            what,
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            let cert = cert.map_err(|e| bad("ca.pem", "CA certificate", e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| bad("ca.pem", "CA certificate", e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad(
                "ca.pem",
                "CA certificate",
                "no certificate in it".into(),
            ));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("node.pem", "certificate", e.to_string()))?;
        let first = chain
            .first()
            .ok_or_else(|| bad("node.pem", "certificate", "no certificate in it".into()))?;
        let identity = Peer::from_der(first)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad("node.key", "private key", e.to_string()))?;
        let roots = Arc::new(roots);
        let server_with = |optional: bool| {
            let builder = WebPkiClientVerifier::builder(Arc::clone(&roots));
            let builder = if optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            let verifier = builder
                .build()
                .map_err(|e| bad("ca.pem", "CA certificate", e.to_string()))?;
            let mut server = rustls::ServerConfig::builder()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| bad("node.key", "key for node.pem", e.to_string()))?;
            server.alpn_protocols = vec![b"h2".to_vec()];
            Ok::<_, SecurityError>(Arc::new(server))
        };
        let server = server_with(false)?;
        let server_optional = server_with(true)?;
        Ok(NodeTls {
            dir: dir.to_path_buf(),
            identity,
            ca_pem,
            cert_pem,
            key_pem,
            server,
            server_optional,
        })
    }

    /// The server side: a client certificate that chains to the CA is required.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The server side of the client API's own port: a client certificate, if one is
    /// presented, must chain to the CA, but none is required.
    pub fn server_config_optional(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server_optional)
    }

    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }
}

/// A web server's TLS (`eddy serve --tls-cert --tls-key`): a certificate chain and its key,
/// PEM files, and no client certificate asked, since browsers and HTTP clients connect.
pub fn https_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SecurityError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| SecurityError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })
    };
    let bad = |path: &Path, what: &'static str, reason: String| SecurityError::BadFile {
        path: path.to_path_buf(),
        what,
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "certificate", "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| bad(key, "private key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(key, "key for the certificate", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a rustls error (an untrusted certificate, a failed handshake) is anywhere in `e`'s
/// chain of causes, also inside I/O errors, which hide what they wrap from `source()`
/// (hyper-rustls wraps the rustls error twice). Such a failure is no reason to try again.
pub fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if is_tls_failure(inner) {
            return true;
        }
    }
    e.source().is_some_and(is_tls_failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{default_nodes, init, issue, NodeSpec};
    use crate::Role;

    #[test]
    fn init_makes_a_ca_and_usable_node_directories_with_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = default_nodes(2, &["c1.example".into()], &[]).unwrap();
        let made = init(dir.path(), &nodes).unwrap();
        assert_eq!(made.len(), 6);
        let c1 = NodeTls::load(&dir.path().join("coordinator-1")).unwrap();
        assert_eq!(c1.identity.name, "coordinator-1");
        assert_eq!(c1.identity.roles, vec![Role::Coordinator]);
        let client = NodeTls::load(&dir.path().join("client")).unwrap();
        assert_eq!(client.identity.roles, vec![Role::Client]);
        // The CA is never overwritten.
        let again = init(dir.path(), &nodes).unwrap_err().to_string();
        assert!(again.contains("already holds a CA"), "{again}");
        // One more node, several roles.
        let spec = NodeSpec::named(
            "local",
            vec![Role::Coordinator, Role::Worker, Role::Client],
            vec![],
            vec!["10.0.0.5".parse().unwrap()],
        )
        .unwrap();
        issue(dir.path(), &spec).unwrap();
        let local = NodeTls::load(&dir.path().join("local")).unwrap();
        assert_eq!(local.identity.roles.len(), 3);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("local/node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_names_and_missing_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = NodeSpec::named("../x", vec![], vec![], vec![]).unwrap_err();
        assert!(e.to_string().contains("not a usable node name"), "{e}");
        let e = NodeSpec::named("gateway", vec![], vec![], vec![]).unwrap_err();
        assert!(e.to_string().contains("--role"), "{e}");
        let e = NodeTls::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "not a pem").unwrap();
        std::fs::write(dir.path().join("node.pem"), "x").unwrap();
        std::fs::write(dir.path().join("node.key"), "x").unwrap();
        let e = NodeTls::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }
}

//! How Eddy's processes talk gRPC. Every client channel and server is built here, so TLS,
//! authentication and tuning change one file.
//!
//! A process either runs with mutual TLS ([`use_tls`], from its certificate directory) or, only
//! when its operator said `--insecure`, in plaintext. With TLS every connection it opens
//! presents its certificate and checks the server's against the cluster CA, every connection it
//! accepts must present one, and each service admits only the roles [`allow`] names.

use eddy_security::{NodeTls, Peer, Role};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};

/// A gRPC address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{addr}` is not a valid address (expected HOST:PORT, e.g. 127.0.0.1:7001): {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error(transparent)]
    Security(#[from] eddy_security::SecurityError),
}

/// The TLS material of this process; `None`: plaintext.
static TLS: RwLock<Option<Arc<NodeTls>>> = RwLock::new(None);

fn current_tls() -> Option<Arc<NodeTls>> {
    TLS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A client without a certificate of its own: the cluster CA (PEM) it checks servers
/// against; it reaches only a coordinator's client port, with a token.
static CA_ONLY: RwLock<Option<Arc<Vec<u8>>>> = RwLock::new(None);

fn ca_only() -> Option<Arc<Vec<u8>>> {
    CA_ONLY.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// From now on this process talks TLS as a client without a certificate, trusting servers
/// whose certificate chains to the CA in `ca` (PEM). Only a coordinator's `--client-listen`
/// port takes such a client, and only with a token.
pub fn use_ca(ca: &std::path::Path) -> Result<(), NetError> {
    let pem = std::fs::read(ca).map_err(|source| eddy_security::SecurityError::Io {
        action: "read",
        path: ca.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(eddy_security::SecurityError::BadFile {
            path: ca.to_path_buf(),
            what: "CA certificate",
            reason: "no PEM certificate in it".into(),
        }
        .into());
    }
    *CA_ONLY.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pem));
    Ok(())
}

/// From now on this process talks mutual TLS with the certificate directory `dir` (see
/// `eddy_security::certs`). Called again (on SIGHUP), it loads the directory anew: new
/// connections use the new certificates, open ones keep theirs. On error nothing changes.
pub fn use_tls(dir: &std::path::Path) -> Result<Peer, NetError> {
    let tls = NodeTls::load(dir)?;
    let identity = tls.identity.clone();
    *TLS.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(tls));
    Ok(identity)
}

/// The bearer token this process's client API calls carry (`EDDY_TOKEN`).
static TOKEN: RwLock<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> =
    RwLock::new(None);

/// From now on every client API call of this process carries `token` (see [`client_api`]).
pub fn use_token(token: &str) -> Result<(), NetError> {
    let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
        eddy_security::SecurityError::Invalid(
            "the token has characters a header cannot carry".into(),
        )
    })?;
    *TOKEN.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
    Ok(())
}

/// Adds this process's token to a call.
#[derive(Clone)]
pub struct Bearer;

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = TOKEN.read().unwrap_or_else(|e| e.into_inner()).clone() {
            request.metadata_mut().insert("authorization", token);
        }
        Ok(request)
    }
}

/// A client of the coordinators' client API over `channel`, its calls carrying this
/// process's token.
pub type ClientApi = crate::v1::client_api_client::ClientApiClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

pub fn client_api(channel: Channel) -> ClientApi {
    crate::v1::client_api_client::ClientApiClient::with_interceptor(channel, Bearer)
}

/// Whether this process talks TLS.
pub fn tls_enabled() -> bool {
    current_tls().is_some() || ca_only().is_some()
}

/// An interceptor that admits only peers whose certificate carries one of `roles` (every
/// peer when the process runs in plaintext). A peer without a certificate cannot get here
/// under TLS: the handshake requires one.
pub fn allow(
    roles: &'static [Role],
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    admit(roles, false)
}

/// Like [`allow`], but a peer without a certificate gets in too (on a port whose handshake
/// does not ask for one, [`Clients::CertificateOptional`]): the service must then check
/// something else, a token.
pub fn allow_without_certificate(
    roles: &'static [Role],
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    admit(roles, true)
}

fn admit(
    roles: &'static [Role],
    anonymous: bool,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        if !tls_enabled() {
            return Ok(request);
        }
        let certs = match request.peer_certs() {
            Some(certs) if !certs.is_empty() => certs,
            _ if anonymous => return Ok(request),
            _ => {
                return Err(tonic::Status::unauthenticated(
                    "a client certificate is required",
                ))
            }
        };
        let peer = certs
            .first()
            .ok_or_else(|| tonic::Status::unauthenticated("a client certificate is required"))
            .and_then(|c| {
                Peer::from_der(c).map_err(|e| tonic::Status::unauthenticated(e.to_string()))
            })?;
        if peer.has_any(roles) {
            return Ok(request);
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        let has: Vec<&str> = peer.roles.iter().map(|r| r.name()).collect();
        tracing::warn!(peer = %peer.name, roles = ?has, wanted = ?wanted, "refused a call: wrong role");
        Err(tonic::Status::permission_denied(format!(
            "the certificate `{}` (roles: {}) may not call this service; it needs a {} certificate",
            peer.name,
            if has.is_empty() {
                "none".to_string()
            } else {
                has.join(", ")
            },
            wanted.join(" or ")
        )))
    }
}

/// Largest message either side accepts: a record batch or a job's snapshot metadata.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How long a connection attempt may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable that reroutes this process's outgoing connections, for fault
/// injection: `DEST=VIA,DEST=VIA` (HOST:PORT each). A connection to `DEST` goes to `VIA`
/// instead, a proxy that forwards to `DEST` unless it was told to drop, delay or cut the
/// traffic. The chaos harness gives every node its own routes through one proxy per pair of
/// nodes, so it can partition any two of them without privileges. Unset, nothing changes.
pub const ROUTES_ENV: &str = "EDDY_NET_ROUTES";

/// The address to connect to for `addr`: itself, or the proxy [`ROUTES_ENV`] names for it.
pub fn route(addr: &str) -> String {
    static ROUTES: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        std::env::var(ROUTES_ENV)
            .ok()
            .map(|v| parse_routes(&v))
            .unwrap_or_default()
    });
    routes
        .get(addr)
        .cloned()
        .unwrap_or_else(|| addr.to_string())
}

/// Parses `DEST=VIA,DEST=VIA`; malformed entries are ignored (with a warning).
pub fn parse_routes(text: &str) -> std::collections::HashMap<String, String> {
    text.split(',')
        .filter(|e| !e.trim().is_empty())
        .filter_map(|entry| match entry.split_once('=') {
            Some((dest, via)) => Some((dest.trim().to_string(), via.trim().to_string())),
            None => {
                tracing::warn!(entry, "{ROUTES_ENV}: not DEST=VIA; ignored");
                None
            }
        })
        .collect()
}

fn endpoint(addr: &str, timeout: Option<Duration>) -> Result<Endpoint, NetError> {
    let addr = route(addr);
    let tls = current_tls();
    let scheme = if tls_enabled() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let mut ep = Endpoint::from_shared(uri)
        .map_err(|e| NetError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    let config = match (tls, ca_only()) {
        (Some(tls), _) => Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(tls.ca_pem()))
                .identity(Identity::from_pem(tls.cert_pem(), tls.key_pem())),
        ),
        (None, Some(ca)) => {
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*ca)))
        }
        (None, None) => None,
    };
    if let Some(config) = config {
        ep = ep.tls_config(config).map_err(|e| NetError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(ep)
}

/// A channel for request/response calls, each bounded by `timeout`. Connects lazily, so an
/// unreachable peer shows up as a failed call, not here.
pub fn channel(addr: &str, timeout: Duration) -> Result<Channel, NetError> {
    Ok(endpoint(addr, Some(timeout))?.connect_lazy())
}

/// A channel for long-lived streams (no per-call timeout), connected now.
pub async fn stream_channel(addr: &str) -> Result<Channel, NetError> {
    endpoint(addr, None)?
        .connect()
        .await
        .map_err(|e| NetError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

/// The server builder every Eddy process uses.
pub fn server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// Binds a listener (port 0: an ephemeral port) and returns it with the address it got.
pub async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), NetError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NetError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let local = listener.local_addr().map_err(|e| NetError::BadAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok((listener, local))
}

/// Whether a port's TLS handshake asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clients {
    /// Every port between nodes, and the client API on a shared port.
    CertificateRequired,
    /// A coordinator's own client port: a client may come with a token only.
    CertificateOptional,
}

/// Serves `router` on `listener` until `shutdown` turns true, then drains and returns. With
/// TLS, each accepted connection's handshake runs on a task of its own
/// ([`eddy_security::accept::accept_tls`]) with the certificates loaded at that moment.
pub async fn serve(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
    clients: Clients,
) -> Result<(), tonic::transport::Error> {
    let stopped = |mut shutdown: tokio::sync::watch::Receiver<bool>| async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if !tls_enabled() {
        return router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stopped(shutdown),
            )
            .await;
    }
    let accepted = eddy_security::accept::accept_tls(
        listener,
        move || {
            current_tls().map(|tls| match clients {
                Clients::CertificateRequired => tls.server_config(),
                Clients::CertificateOptional => tls.server_config_optional(),
            })
        },
        stopped(shutdown.clone()),
    );
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(accepted),
        |(stream, _)| Ok::<_, std::io::Error>(stream),
    );
    router
        .serve_with_incoming_shutdown(incoming, stopped(shutdown))
        .await
}

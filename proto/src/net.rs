//! How Eddy's processes talk gRPC. Every client channel and server is built here, so TLS,
//! authentication and tuning later change one file.

use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Server};

/// A gRPC address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{addr}` is not a valid address (expected HOST:PORT, e.g. 127.0.0.1:7001): {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
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
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
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

/// Serves `router` on `listener` until `shutdown` turns true, then drains and returns.
pub async fn serve(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        )
        .await
}

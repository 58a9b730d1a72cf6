//! The accepting side of a TLS port, shared by the nodes' gRPC services and `eddy serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a peer may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done, waiting for the server to take them.
const BACKLOG: usize = 64;

/// Accepts connections on `listener` until `stop` completes or the receiver is dropped, and
/// runs each TLS handshake on a task of its own, with the configuration `config` gives at
/// that moment (so certificates reloaded since are used; `None` drops the connection). A slow
/// or hostile peer therefore holds up no one; a handshake that fails or takes longer than
/// [`HANDSHAKE_TIMEOUT`] is logged and dropped.
pub fn accept_tls<C, S>(
    listener: TcpListener,
    config: C,
    stop: S,
) -> tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>
where
    C: Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let mut stop = std::pin::pin!(stop);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = config() else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

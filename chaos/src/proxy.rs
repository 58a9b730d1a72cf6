//! A TCP proxy per directed pair of nodes, which the harness tells to pass, hold, delay or cut
//! the traffic between them: network faults without privileges or kernel modules.
//!
//! Every node reaches every other node through its own proxy (`EDDY_NET_ROUTES`, read where
//! `eddy-proto` builds channels), so a fault on the link from A to B touches exactly the
//! connections A opens to B. "Holding" a direction stops reading from it: the kernel buffers
//! fill, the sender blocks and, when the link heals, the held bytes flow on, as TCP behaves
//! across a partition that heals before its timeouts. New connections during a hold are
//! accepted and connected upstream only when the link heals (a peer that cannot reach its
//! destination times out, as it would on a dead route).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link does to its traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Bytes from the connecting node to the destination are held.
    pub hold_forward: bool,
    /// Bytes from the destination back to the connecting node are held.
    pub hold_backward: bool,
    /// Added one-way delay of every chunk, in both directions.
    pub latency: Duration,
    /// Each chunk's delay varies by up to this much (order is kept).
    pub jitter: Duration,
    /// Incremented to reset every open connection (an RST to both ends).
    pub resets: u64,
}

impl LinkState {
    fn holds(&self, forward: bool) -> bool {
        if forward {
            self.hold_forward
        } else {
            self.hold_backward
        }
    }
}

/// The control of one link.
#[derive(Clone)]
pub struct Link {
    state: Arc<watch::Sender<LinkState>>,
}

impl Link {
    /// Changes the link's state with `change`.
    pub fn update(&self, change: impl FnOnce(&mut LinkState)) {
        self.state.send_modify(change);
    }

    /// The link's state now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Back to passing everything at once (what a heal does); resets are kept counting.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            let resets = s.resets;
            *s = LinkState {
                resets,
                ..LinkState::default()
            };
        });
    }
}

/// A running proxy: connections to `listen` are forwarded to `destination`.
pub struct Proxy {
    pub listen: SocketAddr,
    pub destination: String,
    pub link: Link,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `destination` (HOST:PORT).
    pub async fn start(destination: String, seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (tx, _) = watch::channel(LinkState::default());
        let link = Link {
            state: Arc::new(tx),
        };
        let task = {
            let link = link.clone();
            let destination = destination.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    n += 1;
                    let _ = client.set_nodelay(true);
                    tokio::spawn(connection(
                        client,
                        destination.clone(),
                        link.clone(),
                        seed.wrapping_mul(0x9e37_79b9).wrapping_add(n),
                    ));
                }
            })
        };
        Ok(Proxy {
            listen,
            destination,
            link,
            task,
        })
    }
}

/// Waits until the link lets `forward` traffic through; false when the connection must be reset.
async fn wait_open(state: &mut watch::Receiver<LinkState>, forward: bool, resets: u64) -> bool {
    loop {
        let s = *state.borrow_and_update();
        if s.resets != resets {
            return false;
        }
        if !s.holds(forward) {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

/// One proxied connection: connects upstream once the link lets traffic through, then pumps
/// both directions until either side closes or the link is reset.
async fn connection(client: TcpStream, destination: String, link: Link, seed: u64) {
    let mut state = link.state.subscribe();
    let resets = state.borrow().resets;
    if !wait_open(&mut state, true, resets).await {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(&destination).await else {
        // The destination is down: the client sees its connection refused, as it would.
        reset(client);
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let forward = pump(client_read, server_write, link.clone(), true, resets, seed);
    let backward = pump(
        server_read,
        client_write,
        link.clone(),
        false,
        resets,
        seed ^ 1,
    );
    let (a, b) = tokio::join!(forward, backward);
    if let (Some((r1, w1)), Some((r2, w2))) = (a, b) {
        // Reset asked for: close both sockets with an RST.
        if let (Ok(c), Ok(s)) = (r1.reunite(w2), r2.reunite(w1)) {
            reset(c);
            reset(s);
        }
    }
}

/// Closes with an RST (SO_LINGER 0). tokio deprecates `set_linger` because a lingering close
/// blocks the thread; with a zero timeout the close does not wait, it resets.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

type Halves = (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Copies one direction, holding and delaying it as the link says. Returns the halves when
/// the connection is to be reset (so the caller can close it with an RST), `None` when it
/// ended normally.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    forward: bool,
    resets: u64,
    seed: u64,
) -> Option<Halves> {
    let mut state = link.state.subscribe();
    // Chunks with the time they may be written: a writer task keeps order and delays. It
    // hands its half back when the link is reset, so that the caller can send an RST.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = {
        let mut state = link.state.subscribe();
        tokio::spawn(async move {
            let was_reset = |s: &LinkState| s.resets != resets;
            loop {
                let item = tokio::select! {
                    item = rx.recv() => item,
                    reset = async { state.wait_for(was_reset).await.is_ok() } => {
                        if reset {
                            return Some(to);
                        }
                        rx.recv().await
                    }
                };
                let Some((at, bytes)) = item else {
                    let _ = to.shutdown().await;
                    return None;
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    true = async { state.wait_for(was_reset).await.is_ok() } => return Some(to),
                }
                if to.write_all(&bytes).await.is_err() {
                    return None;
                }
            }
        })
    };
    let mut rng = seed | 1;
    let mut last = Instant::now();
    let mut buffer = vec![0u8; 64 * 1024];
    let reset_asked = loop {
        if !wait_open(&mut state, forward, resets).await {
            break true;
        }
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break false,
                Ok(n) => n,
            },
            // A hold or reset while blocked in read: look at the link again.
            _ = state.changed() => continue,
        };
        let s = *state.borrow();
        let mut delay = s.latency;
        if !s.jitter.is_zero() {
            // xorshift: cheap, seeded, good enough for jitter.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            delay += Duration::from_micros(rng % (s.jitter.as_micros() as u64 + 1));
        }
        let at = (Instant::now() + delay).max(last);
        last = at;
        if tx.send((at, buffer[..n].to_vec())).await.is_err() {
            break false;
        }
    };
    drop(tx);
    let to = writer.await.ok().flatten();
    match (reset_asked, to) {
        (true, Some(to)) => Some((from, to)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> bool {
        stream.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        matches!(
            tokio::time::timeout(within, stream.read_exact(&mut b)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn holds_delays_heals_and_resets() {
        let echo = echo_server().await;
        let proxy = Proxy::start(echo.to_string(), 1).await.unwrap();
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        assert!(round_trip(&mut c, Duration::from_secs(2)).await);
        // Held one way: nothing comes back; healed: the held bytes arrive.
        proxy.link.update(|s| s.hold_forward = true);
        assert!(!round_trip(&mut c, Duration::from_millis(300)).await);
        proxy.link.heal();
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        // Latency delays, and keeps order.
        proxy
            .link
            .update(|s| s.latency = Duration::from_millis(150));
        let started = Instant::now();
        assert!(round_trip(&mut c, Duration::from_secs(2)).await);
        assert!(started.elapsed() >= Duration::from_millis(300));
        proxy.link.heal();
        // A reset closes the connection.
        proxy.link.update(|s| s.resets += 1);
        let mut b = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        // New connections work again after the reset.
        let mut c = TcpStream::connect(proxy.listen).await.unwrap();
        assert!(round_trip(&mut c, Duration::from_secs(2)).await);
    }
}

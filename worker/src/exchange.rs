//! Records between workers: one gRPC stream per channel (sending subtask → receiving subtask of
//! one edge), with credit-based flow control.
//!
//! The receiver grants `INITIAL_CREDITS` frames when the stream opens and one more each time a
//! frame has moved into the receiving task's bounded input queue. The sender sends a frame only
//! against a credit, so at most `INITIAL_CREDITS` frames per channel are in flight or buffered
//! in the network layer; when the receiving task is slow its queue stays full, no credits
//! return, the sending task blocks in [`Outlet::send`], and the pressure travels on to the
//! sources, as within a process.

use eddy_proto::v1::exchange_client::ExchangeClient;
use eddy_proto::v1::exchange_server::Exchange;
use eddy_proto::v1::{exchange_frame::Kind, Credit, ExchangeFrame, ExchangeOpen};
use eddy_runtime::element::Element;
use eddy_runtime::exec::{ChannelKey, Network, Outlet};
use eddy_runtime::types::Row;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Frames a receiver lets a sender have in flight per channel.
pub const INITIAL_CREDITS: u32 = 4;

/// How long an incoming stream waits for its receiving task to be deployed (workers deploy
/// an attempt's tasks at slightly different times).
const INLET_WAIT: Duration = Duration::from_secs(10);

/// A channel of a job attempt, as both sides name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId {
    pub job: String,
    pub attempt: u64,
    pub key: ChannelKey,
}

/// Prometheus metrics of one channel, labelled by job, consumer node and input, and subtasks.
struct ChannelMetrics {
    labels: Vec<(&'static str, String)>,
}

impl ChannelMetrics {
    fn of(open: &ExchangeOpen) -> Self {
        ChannelMetrics {
            labels: vec![
                ("job", open.job_id.clone()),
                ("node", open.node.to_string()),
                ("input", open.input.to_string()),
                ("from", open.from_subtask.to_string()),
                ("to", open.to_subtask.to_string()),
            ],
        }
    }

    fn counter(&self, name: &'static str) -> metrics::Counter {
        metrics::counter!(name, &self.labels)
    }

    fn gauge(&self, name: &'static str) -> metrics::Gauge {
        metrics::gauge!(name, &self.labels)
    }
}

/// Streams that may wait at once for their receiving task to be deployed, and streams that
/// may be open at once: a peer that opens streams nobody expects (a bug, or a hostile one)
/// gets RESOURCE_EXHAUSTED instead of a thread and a wait each.
const MAX_WAITING_STREAMS: usize = 1024;
const MAX_OPEN_STREAMS: usize = 8192;

/// Receiving ends registered by deployed tasks, waiting for their streams.
pub struct Inlets {
    waiting: Mutex<HashMap<ChannelId, crossbeam_channel::Sender<Element>>>,
    /// Woken whenever an inlet is registered.
    registered: tokio::sync::Notify,
    waiters: std::sync::atomic::AtomicUsize,
    open: Arc<tokio::sync::Semaphore>,
}

impl Default for Inlets {
    fn default() -> Self {
        Inlets {
            waiting: Mutex::default(),
            registered: tokio::sync::Notify::new(),
            waiters: std::sync::atomic::AtomicUsize::new(0),
            open: Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_STREAMS)),
        }
    }
}

impl Inlets {
    fn register(&self, id: ChannelId, into: crossbeam_channel::Sender<Element>) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, into);
        self.registered.notify_waiters();
    }

    fn try_take(&self, id: &ChannelId) -> Option<crossbeam_channel::Sender<Element>> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// The receiving end of `id`, waiting (woken by registrations, not polling) up to
    /// [`INLET_WAIT`] for its task to be deployed.
    async fn take(&self, id: &ChannelId) -> Result<crossbeam_channel::Sender<Element>, Status> {
        if let Some(tx) = self.try_take(id) {
            return Ok(tx);
        }
        use std::sync::atomic::Ordering::SeqCst;
        if self.waiters.fetch_add(1, SeqCst) >= MAX_WAITING_STREAMS {
            self.waiters.fetch_sub(1, SeqCst);
            return Err(Status::resource_exhausted(
                "too many exchange streams wait for their tasks",
            ));
        }
        let until = tokio::time::Instant::now() + INLET_WAIT;
        let found = loop {
            let registered = self.registered.notified();
            if let Some(tx) = self.try_take(id) {
                break Some(tx);
            }
            if tokio::time::timeout_at(until, registered).await.is_err() {
                break self.try_take(id);
            }
        };
        self.waiters.fetch_sub(1, SeqCst);
        found.ok_or_else(|| {
            Status::not_found(format!(
                "no task of {} attempt {} receives {:?} here",
                id.job, id.attempt, id.key
            ))
        })
    }

    /// Forgets the inlets of an attempt that ended before their streams arrived.
    pub fn drop_attempt(&self, job: &str, attempt: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| !(id.job == job && id.attempt == attempt));
    }
}

fn encode(element: Element) -> Result<(Kind, usize), String> {
    Ok(match element {
        Element::Batch(rows) => {
            let bytes = bincode::serde::encode_to_vec(&rows, bincode::config::standard())
                .map_err(|e| format!("cannot encode a batch: {e}"))?;
            let n = bytes.len();
            (Kind::Batch(bytes), n)
        }
        Element::Watermark(w) => (Kind::Watermark(w), 8),
        Element::Idle => (Kind::Idle(true), 1),
        Element::Barrier(id) => (Kind::Barrier(id), 8),
        Element::End => (Kind::End(true), 1),
    })
}

/// The element a frame from another worker carries; an error for a frame that is not one
/// (also what a hostile or broken peer sends: never a panic).
pub fn decode_frame(frame: ExchangeFrame) -> Result<Element, String> {
    match frame.kind {
        Some(kind) => decode(kind),
        None => Err("an empty frame".into()),
    }
}

/// Bincode as the sender encodes it, with a bound on what one frame may make the decoder
/// allocate: a frame that claims a string or a list of a billion elements is an error, not an
/// abort (found by fuzzing). Frames are at most 64 MiB; what they decode to is larger (a value
/// of one byte takes 24 in memory), and a real batch stays far below this.
const DECODE_LIMIT: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 1 << 30 }>,
> = bincode::config::standard().with_limit::<{ 1 << 30 }>();

fn decode(kind: Kind) -> Result<Element, String> {
    Ok(match kind {
        Kind::Batch(bytes) => {
            let (rows, _): (Vec<Row>, usize) =
                bincode::serde::decode_from_slice(&bytes, DECODE_LIMIT)
                    .map_err(|e| format!("cannot decode a batch: {e}"))?;
            Element::Batch(rows)
        }
        Kind::Watermark(w) => Element::Watermark(w),
        Kind::Idle(_) => Element::Idle,
        Kind::Barrier(id) => Element::Barrier(id),
        Kind::End(_) => Element::End,
        Kind::Open(_) => return Err("a second open frame".into()),
    })
}

/// The gRPC service receiving streams from other workers.
pub struct ExchangeService {
    pub inlets: Arc<Inlets>,
}

type CreditStream = Pin<Box<dyn Stream<Item = Result<Credit, Status>> + Send>>;

#[tonic::async_trait]
impl Exchange for ExchangeService {
    type TransferStream = CreditStream;

    async fn transfer(
        &self,
        request: Request<Streaming<ExchangeFrame>>,
    ) -> Result<Response<Self::TransferStream>, Status> {
        let mut frames = request.into_inner();
        let open = match frames.message().await? {
            Some(ExchangeFrame {
                kind: Some(Kind::Open(open)),
            }) => open,
            _ => {
                return Err(Status::invalid_argument(
                    "a stream starts with an open frame",
                ))
            }
        };
        let id = ChannelId {
            job: open.job_id.clone(),
            attempt: open.attempt,
            key: ChannelKey {
                node: open.node as usize,
                input: open.input as usize,
                from: open.from_subtask,
                to: open.to_subtask,
            },
        };
        let permit = Arc::clone(&self.inlets.open)
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many exchange streams are open"))?;
        let into = self.inlets.take(&id).await?;
        let (credits_tx, credits_rx) = mpsc::unbounded_channel();
        let _ = credits_tx.send(Ok(Credit {
            frames: INITIAL_CREDITS,
        }));
        // Frames move into the task's blocking queue on a thread of their own; a credit goes
        // back for each frame the queue took.
        let (frames_tx, mut frames_rx) = mpsc::channel::<Element>(INITIAL_CREDITS as usize);
        let bytes_received =
            ChannelMetrics::of(&open).counter("eddy_exchange_received_bytes_total");
        std::thread::Builder::new()
            .name(format!("exchange-in-{}", id.key.node))
            .spawn(move || {
                // The stream counts as open until its thread ends.
                let _permit = permit;
                while let Some(element) = frames_rx.blocking_recv() {
                    if into.send(element).is_err() {
                        break;
                    }
                    let _ = credits_tx.send(Ok(Credit { frames: 1 }));
                }
            })
            .map_err(|e| Status::internal(format!("cannot start a thread: {e}")))?;
        tokio::spawn(async move {
            loop {
                match frames.message().await {
                    Ok(Some(ExchangeFrame { kind: Some(kind) })) => {
                        if let Kind::Batch(b) = &kind {
                            bytes_received.increment(b.len() as u64);
                        }
                        match decode(kind) {
                            Ok(element) => {
                                if frames_tx.send(element).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "bad exchange frame");
                                break;
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    // End of stream or a broken connection: the receiving task sees its queue's
                    // sender go away (a disconnect) unless the End element arrived first.
                    Ok(None) | Err(_) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            credits_rx,
        ))))
    }
}

/// The [`Network`] of one job attempt on this worker.
pub struct GrpcNetwork {
    pub job: String,
    pub attempt: u64,
    /// Worker address by global task index of the attempt.
    pub task_addrs: Vec<String>,
    /// Global task index of subtask 0 of the task each node heads (or is chained into).
    pub task_of_node: Vec<usize>,
    pub inlets: Arc<Inlets>,
    pub runtime: tokio::runtime::Handle,
}

impl Network for GrpcNetwork {
    fn outlet(&self, key: ChannelKey) -> Result<Box<dyn Outlet>, String> {
        let task = self.task_of_node[key.node] + key.to as usize;
        let addr = self
            .task_addrs
            .get(task)
            .cloned()
            .ok_or_else(|| format!("no worker runs task {task}"))?;
        let (tx, rx) = mpsc::channel::<Element>(1);
        let open = ExchangeOpen {
            job_id: self.job.clone(),
            attempt: self.attempt,
            node: key.node as u32,
            input: key.input as u32,
            from_subtask: key.from,
            to_subtask: key.to,
        };
        self.runtime.spawn(async move {
            if let Err(e) = pump(addr.clone(), open, rx).await {
                tracing::warn!(%addr, error = %e, "exchange stream to {addr} failed");
            }
        });
        Ok(Box::new(GrpcOutlet { tx }))
    }

    fn inlet(
        &self,
        key: ChannelKey,
        into: crossbeam_channel::Sender<Element>,
    ) -> Result<(), String> {
        self.inlets.register(
            ChannelId {
                job: self.job.clone(),
                attempt: self.attempt,
                key,
            },
            into,
        );
        Ok(())
    }
}

struct GrpcOutlet {
    tx: mpsc::Sender<Element>,
}

impl Outlet for GrpcOutlet {
    fn send(&self, element: Element) -> Result<(), String> {
        self.tx
            .blocking_send(element)
            .map_err(|_| "the stream to the receiving worker broke".to_string())
    }
}

/// Sends a channel's elements to the receiving worker, one frame per credit.
async fn pump(
    addr: String,
    open: ExchangeOpen,
    mut elements: mpsc::Receiver<Element>,
) -> Result<(), String> {
    let metrics = ChannelMetrics::of(&open);
    let bytes_sent = metrics.counter("eddy_exchange_sent_bytes_total");
    let frames_sent = metrics.counter("eddy_exchange_sent_frames_total");
    let credit_waits = metrics.counter("eddy_exchange_credit_waits_total");
    let credits = metrics.gauge("eddy_exchange_credits");
    let channel = connect(&addr).await?;
    let (frames_tx, frames_rx) = mpsc::channel::<ExchangeFrame>(1);
    frames_tx
        .send(ExchangeFrame {
            kind: Some(Kind::Open(open)),
        })
        .await
        .map_err(|_| "stream closed".to_string())?;
    let mut granted = ExchangeClient::new(channel)
        .max_decoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
        .transfer(ReceiverStream::new(frames_rx))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut available: u32 = 0;
    while let Some(element) = elements.recv().await {
        if available == 0 {
            credit_waits.increment(1);
        }
        while available == 0 {
            match granted.next().await {
                Some(Ok(c)) => available += c.frames,
                Some(Err(s)) => return Err(s.message().to_string()),
                None => return Err("the receiver closed the stream".into()),
            }
        }
        let (kind, bytes) = encode(element)?;
        frames_tx
            .send(ExchangeFrame { kind: Some(kind) })
            .await
            .map_err(|_| "stream closed".to_string())?;
        available -= 1;
        credits.set(f64::from(available));
        bytes_sent.increment(bytes as u64);
        frames_sent.increment(1);
    }
    // Every element sent: close our side and let the receiver drain.
    drop(frames_tx);
    while let Some(Ok(_)) = granted.next().await {}
    Ok(())
}

/// Connects to a worker, retrying briefly (it may be starting up).
async fn connect(addr: &str) -> Result<tonic::transport::Channel, String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match eddy_proto::net::stream_channel(addr).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= until => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChannelId {
        ChannelId {
            job: "job-1".into(),
            attempt: 1,
            key: ChannelKey {
                node: 1,
                input: 0,
                from: n,
                to: 0,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_for_its_inlet_without_polling_and_strangers_are_bounded() {
        let inlets = Arc::new(Inlets::default());
        // Registered a little later: the waiting stream is woken, not polling.
        let waiting = {
            let inlets = Arc::clone(&inlets);
            tokio::spawn(async move { inlets.take(&id(0)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (tx, _rx) = crossbeam_channel::bounded(1);
        inlets.register(id(0), tx);
        assert!(waiting.await.unwrap().is_ok());
        // A stream nobody expects gives up after the wait, with NOT_FOUND.
        let unknown = inlets.take(&id(1)).await.map(|_| ()).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        // More strangers than may wait at once: the surplus is refused at once.
        let mut strangers = Vec::new();
        for n in 0..MAX_WAITING_STREAMS as u32 {
            let inlets = Arc::clone(&inlets);
            strangers.push(tokio::spawn(async move {
                inlets.take(&id(100 + n)).await.map(|_| ())
            }));
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let refused = inlets.take(&id(99_999)).await.map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for s in strangers {
            assert_eq!(s.await.unwrap().unwrap_err().code(), tonic::Code::NotFound);
        }
    }
}

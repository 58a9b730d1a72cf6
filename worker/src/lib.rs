//! The worker process: registers with the coordinators, heartbeats, runs the task subtasks the
//! leader deploys to it as actix actors ([`actors`]), and exchanges records with other workers over gRPC
//! ([`exchange`]: one stream per channel, credit-based flow control).

pub mod actors;
pub mod deploy;
pub mod exchange;

use actors::TaskActors;
use deploy::{AttemptKey, Paths, Running};
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::coordinator_control_client::CoordinatorControlClient;
use eddy_proto::v1::exchange_server::ExchangeServer;
use eddy_proto::v1::worker_control_server::{WorkerControl, WorkerControlServer};
use eddy_proto::v1::{
    AttemptEndedRequest, AttemptMetrics, CancelAttemptRequest, CheckpointAck, CompleteRequest,
    DeployRequest, Empty, HeartbeatRequest, RegisterRequest, TaskStatus, TriggerRequest,
};
use eddy_runtime::checkpoint::{CheckpointMetadata, UploadTarget};
use eddy_runtime::exec::{ExecError, TaskHost};
use exchange::{ExchangeService, Inlets};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

/// How a worker is started.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub coordinators: Vec<String>,
    /// Where to listen (port 0: any free port).
    pub listen: String,
    pub slots: u32,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
}

/// State shared by the worker's services and loops.
struct Shared {
    config: WorkerConfig,
    /// The address others reach this worker at.
    addr: String,
    worker_id: AtomicU64,
    coordinators: Coordinators,
    attempts: Mutex<HashMap<AttemptKey, Arc<Running>>>,
    inlets: Arc<Inlets>,
    acks: mpsc::UnboundedSender<CheckpointAck>,
    runtime: tokio::runtime::Handle,
    /// Where deployed tasks run.
    actors: Arc<TaskActors>,
}

impl Shared {
    fn attempt(&self, job: &str, attempt: u64) -> Option<Arc<Running>> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(job.to_string(), attempt))
            .cloned()
    }

    /// Cancels every attempt (the worker was declared lost, or it shuts down).
    fn cancel_all(&self) {
        for r in self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            r.cancel.cancel();
        }
    }

    /// Counters of every attempt here, for a heartbeat; also published as metrics.
    fn metrics(&self) -> Vec<AttemptMetrics> {
        let attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts
            .iter()
            .map(|((job, attempt), r)| AttemptMetrics {
                job_id: job.clone(),
                attempt: *attempt,
                tasks: self.task_statuses(job, r, "running"),
            })
            .collect()
    }

    /// The counters of this worker's operator subtasks of one attempt, published as Prometheus
    /// metrics on the way.
    fn task_statuses(&self, job: &str, running: &Running, state: &str) -> Vec<TaskStatus> {
        running
            .live
            .entries()
            .into_iter()
            .map(|e| {
                let records_in = e.counters.records_in.load(Ordering::Relaxed);
                let records_out = e.counters.records_out.load(Ordering::Relaxed);
                let labels = [
                    ("job", job.to_string()),
                    ("operator", e.node.clone()),
                    ("subtask", e.subtask.to_string()),
                ];
                metrics::counter!("eddy_records_in_total", &labels).absolute(records_in);
                metrics::counter!("eddy_records_out_total", &labels).absolute(records_out);
                metrics::gauge!("eddy_busy_seconds", &labels)
                    .set(e.counters.busy_ns.load(Ordering::Relaxed) as f64 / 1e9);
                metrics::gauge!("eddy_backpressured_seconds", &labels)
                    .set(e.counters.backpressured_ns.load(Ordering::Relaxed) as f64 / 1e9);
                TaskStatus {
                    name: e.node,
                    subtask: e.subtask,
                    worker: self.worker_id.load(Ordering::Relaxed),
                    worker_addr: self.addr.clone(),
                    state: state.into(),
                    records_in,
                    records_out,
                }
            })
            .collect()
    }
}

/// The control service the leader calls.
struct Control {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl WorkerControl for Control {
    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let key = (request.job_id.clone(), request.attempt);
        if self.shared.attempt(&key.0, key.1).is_some() {
            return Ok(Response::new(Empty {}));
        }
        let shared = Arc::clone(&self.shared);
        let paths = Paths {
            data_dir: shared.config.data_dir.clone(),
        };
        let prepared = {
            let shared = Arc::clone(&shared);
            let request = request.clone();
            tokio::task::spawn_blocking(move || {
                deploy::prepare(
                    &request,
                    &paths,
                    Arc::clone(&shared.inlets),
                    shared.acks.clone(),
                    shared.runtime.clone(),
                    Arc::clone(&shared.actors) as Arc<dyn TaskHost>,
                )
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::failed_precondition)?
        };
        shared
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), Arc::clone(&prepared.running));
        tracing::info!(job = %key.0, attempt = key.1, tasks = ?request.tasks, "deployed");
        let done = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("{}-{}", key.0, key.1))
            .spawn(move || {
                let result = deploy::run(&prepared);
                // The attempt stays known until the leader cancels it: the commit of its final
                // checkpoint arrives after its tasks ended. Its local state is only a cache of
                // its checkpoints: gone with it.
                done.inlets.drop_attempt(&key.0, key.1);
                let dir = deploy::attempt_dir(&done.config.data_dir, &key.0, key.1);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an attempt's state");
                    }
                }
                // A cancelled part did not finish either: it is reported as failed (the leader
                // ignores the ends of attempts it stopped itself), but it is not worth a warning.
                let (state, failed, error) = match result {
                    Ok(()) => ("finished", false, String::new()),
                    Err(ExecError::Cancelled) => ("cancelled", true, ExecError::Cancelled.to_string()),
                    Err(e) => {
                        let error = e.to_string();
                        tracing::warn!(job = %key.0, attempt = key.1, %error, "attempt failed here");
                        ("failed", true, error)
                    }
                };
                let report = AttemptEndedRequest {
                    worker_id: done.worker_id.load(Ordering::Relaxed),
                    tasks: done.task_statuses(&key.0, &prepared.running, state),
                    job_id: key.0,
                    attempt: key.1,
                    failed,
                    error,
                };
                let shared = Arc::clone(&done);
                done.runtime.spawn(async move {
                    let _ =
                        shared
                            .coordinators
                            .call(Duration::from_secs(30), |c| {
                                let report = report.clone();
                                async move {
                                    CoordinatorControlClient::new(c).attempt_ended(report).await
                                }
                            })
                            .await;
                });
            })
            .map_err(|e| Status::internal(format!("cannot start a thread: {e}")))?;
        Ok(Response::new(Empty {}))
    }

    async fn cancel_attempt(
        &self,
        request: Request<CancelAttemptRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let removed = self
            .shared
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(r.job_id.clone(), r.attempt));
        if let Some(running) = removed {
            running.cancel.cancel();
        }
        self.shared.inlets.drop_attempt(&r.job_id, r.attempt);
        Ok(Response::new(Empty {}))
    }

    async fn trigger_checkpoint(
        &self,
        request: Request<TriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let Some(running) = self.shared.attempt(&r.job_id, r.attempt) else {
            return Err(Status::not_found("no such attempt here"));
        };
        let store = deploy::open_store(std::path::Path::new(&r.store_dir))
            .map_err(Status::failed_precondition)?;
        running.link.trigger(UploadTarget {
            store,
            checkpoint: r.checkpoint,
            incremental: r.incremental,
        });
        Ok(Response::new(Empty {}))
    }

    async fn checkpoint_complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let metadata: CheckpointMetadata = serde_json::from_slice(&r.metadata_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let running = self.shared.attempt(&r.job_id, r.attempt);
        if let Some(running) = running {
            tokio::task::spawn_blocking(move || running.commit(&metadata))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::internal)?;
        }
        Ok(Response::new(Empty {}))
    }
}

/// A running worker.
pub struct WorkerHandle {
    pub addr: String,
    _lock: eddy_runtime::dirlock::DirLock,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    actors: Arc<TaskActors>,
}

impl WorkerHandle {
    /// Stops serving, cancels every task and stops the actor system.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let actors = self.actors;
        let _ = tokio::task::spawn_blocking(move || actors.stop()).await;
    }
}

/// Starts a worker on the current tokio runtime: its gRPC server, registration, heartbeats
/// and the forwarding of checkpoint acknowledgements to the leader.
pub async fn start(config: WorkerConfig) -> anyhow::Result<WorkerHandle> {
    let lock = eddy_runtime::dirlock::DirLock::acquire(&config.data_dir, "worker data directory")?;
    deploy::remove_attempt_dirs(&config.data_dir);
    let (listener, local) = eddy_proto::net::bind(&config.listen).await?;
    let addr = local.to_string();
    let (acks_tx, mut acks_rx) = mpsc::unbounded_channel::<CheckpointAck>();
    let shared = Arc::new(Shared {
        coordinators: Coordinators::new(config.coordinators.clone()),
        config,
        addr: addr.clone(),
        worker_id: AtomicU64::new(0),
        attempts: Mutex::default(),
        inlets: Arc::new(Inlets::default()),
        acks: acks_tx,
        runtime: tokio::runtime::Handle::current(),
        actors: Arc::new(TaskActors::start()?),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = {
        let rx = shutdown_rx.clone();
        let control = WorkerControlServer::new(Control {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES);
        let exchange = ExchangeServer::new(ExchangeService {
            inlets: Arc::clone(&shared.inlets),
        })
        .max_decoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let router = eddy_proto::net::server()
                .add_service(control)
                .add_service(exchange);
            let served = eddy_proto::net::serve(router, listener, rx).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "worker server failed");
            }
            shared.cancel_all();
        })
    };
    // Acknowledgements to the leader, in order.
    {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Some(ack) = acks_rx.recv().await {
                let sent = shared
                    .coordinators
                    .call(Duration::from_secs(10), |c| {
                        let ack = ack.clone();
                        async move {
                            CoordinatorControlClient::new(c)
                                .max_encoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES)
                                .acknowledge_checkpoint(ack)
                                .await
                        }
                    })
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e.message(), "a checkpoint acknowledgement was lost");
                }
            }
        });
    }
    // Registration and heartbeats.
    {
        let shared = Arc::clone(&shared);
        let mut stop = shutdown_rx;
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                if shared.worker_id.load(Ordering::Relaxed) == 0 {
                    register(&shared).await;
                    continue;
                }
                let beat = HeartbeatRequest {
                    worker_id: shared.worker_id.load(Ordering::Relaxed),
                    attempts: shared.metrics(),
                };
                let answer = shared
                    .coordinators
                    .call(shared.config.heartbeat * 3, |c| {
                        let beat = beat.clone();
                        async move { CoordinatorControlClient::new(c).heartbeat(beat).await }
                    })
                    .await;
                if let Ok(r) = answer {
                    if !r.into_inner().known {
                        tracing::warn!(
                            "the coordinators declared this worker lost; registering again"
                        );
                        shared.cancel_all();
                        shared.worker_id.store(0, Ordering::Relaxed);
                        continue;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(shared.config.heartbeat) => {}
                    _ = stop.changed() => {}
                }
            }
        });
    }
    Ok(WorkerHandle {
        addr,
        _lock: lock,
        shutdown: shutdown_tx,
        server,
        actors: Arc::clone(&shared.actors),
    })
}

async fn register(shared: &Shared) {
    let request = RegisterRequest {
        addr: shared.addr.clone(),
        slots: shared.config.slots,
        worker_id: 0,
    };
    match shared
        .coordinators
        .call(Duration::from_secs(5), |c| {
            let request = request.clone();
            async move { CoordinatorControlClient::new(c).register(request).await }
        })
        .await
    {
        Ok(r) => {
            let id = r.into_inner().worker_id;
            tracing::info!(id, addr = %shared.addr, "registered");
            shared.worker_id.store(id, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!(error = %e.message(), "registration failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

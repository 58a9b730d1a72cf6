//! The worker process: registers with the coordinators, heartbeats, runs the task subtasks the
//! leader deploys to it as actix actors ([`actors`]), and exchanges records with other workers over gRPC
//! ([`exchange`]: one stream per channel, credit-based flow control).

pub mod actors;
pub mod deploy;
pub mod error;
pub mod exchange;

use actors::TaskActors;
use deploy::{AttemptKey, Paths, Running};
use eddy_proto::leader::Coordinators;
use eddy_proto::v1::coordinator_control_client::CoordinatorControlClient;
use eddy_proto::v1::exchange_server::ExchangeServer;
use eddy_proto::v1::worker_control_server::{WorkerControl, WorkerControlServer};
use eddy_proto::v1::{
    AttemptDescription, AttemptEndedRequest, AttemptMetrics, CancelAttemptRequest, CheckpointAck,
    CompleteRequest, DeployRequest, DescribeAttemptRequest, Empty, HeartbeatRequest,
    RegisterRequest, TaskStatus, TriggerRequest,
};
use eddy_runtime::checkpoint::{CheckpointMetadata, CheckpointStore, UploadTarget};
use eddy_runtime::error::FaultDomain;
use eddy_runtime::exec::{ExecError, TaskHost};
use error::WorkerError;
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
    /// Where deployed jobs may read and write (`--allow-path`): checked again at each
    /// deployment, after the coordinators checked it at submission, so a job cannot reach
    /// beyond what this host's operator allows even if a coordinator is wrong. `None`: what
    /// the coordinators allow.
    pub allowed_paths: Option<eddy_security::paths::AllowedPaths>,
}

/// State shared by the worker's services and loops.
struct Shared {
    config: WorkerConfig,
    /// The address others reach this worker at.
    addr: String,
    worker_id: AtomicU64,
    coordinators: Coordinators,
    attempts: Mutex<HashMap<AttemptKey, Arc<Running>>>,
    cancelled: Mutex<Tombstones>,
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

/// Attempts cancelled on this worker, remembered so that a deployment that arrives (or
/// finishes preparing) after its cancel does not start: bounded, oldest forgotten first.
#[derive(Default)]
struct Tombstones {
    order: std::collections::VecDeque<AttemptKey>,
    set: std::collections::HashSet<AttemptKey>,
}

impl Tombstones {
    const KEEP: usize = 4096;

    fn insert(&mut self, key: AttemptKey) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, key: &AttemptKey) -> bool {
        self.set.contains(key)
    }
}

/// The control service the leader calls.
struct Control {
    shared: Arc<Shared>,
}

impl Control {
    /// Removes and cancels an attempt, and remembers that it was cancelled.
    fn cancel(&self, key: &AttemptKey) {
        self.shared
            .cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        let removed = self
            .shared
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(running) = removed {
            running.cancel.cancel();
        }
        self.shared.inlets.drop_attempt(&key.0, key.1);
    }

    fn is_cancelled(&self, key: &AttemptKey) -> bool {
        self.shared
            .cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }
}

/// Runs a prepared attempt to its end on a thread of its own, then reports the end.
fn run_attempt(
    shared: Arc<Shared>,
    key: AttemptKey,
    prepared: deploy::Prepared,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("{}-{}", key.0, key.1))
        .spawn(move || {
            let result = deploy::run(&prepared);
            // The attempt stays known until the leader cancels it: the commit of its final
            // checkpoint arrives after its tasks ended. Its local state is only a cache of
            // its checkpoints: gone with it.
            shared.inlets.drop_attempt(&key.0, key.1);
            let dir = deploy::attempt_dir(&shared.config.data_dir, &key.0, key.1);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an attempt's state");
                }
            }
            let (state, failed, cancelled, error, domain) = match &result {
                Ok(()) => ("finished", false, false, String::new(), FaultDomain::Transient),
                Err(ExecError::Cancelled) => (
                    "cancelled",
                    true,
                    true,
                    ExecError::Cancelled.to_string(),
                    FaultDomain::Transient,
                ),
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(job = %key.0, attempt = key.1, %error, domain = e.domain().name(), "attempt failed here");
                    ("failed", true, false, error, e.domain())
                }
            };
            let report = AttemptEndedRequest {
                worker_id: shared.worker_id.load(Ordering::Relaxed),
                tasks: shared.task_statuses(&key.0, &prepared.running, state),
                job_id: key.0.clone(),
                attempt: key.1,
                failed,
                error,
                domain: eddy_proto::v1::FaultDomain::from(domain) as i32,
                cancelled,
            };
            *prepared
                .running
                .end
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
            let reporter = Arc::clone(&shared);
            shared.runtime.spawn(async move {
                let _ = reporter
                    .coordinators
                    .call(Duration::from_secs(30), |c| {
                        let report = report.clone();
                        async move { CoordinatorControlClient::new(c).attempt_ended(report).await }
                    })
                    .await;
            });
        })
        .map(|_| ())
}

#[tonic::async_trait]
impl WorkerControl for Control {
    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let key = (request.job_id.clone(), request.attempt);
        if self.shared.attempt(&key.0, key.1).is_some() {
            return Ok(Response::new(Empty {}));
        }
        let cancelled = || WorkerError::Cancelled {
            job: key.0.clone(),
            attempt: key.1,
        };
        if self.is_cancelled(&key) {
            return Err(cancelled().status());
        }
        // A newer attempt of a job supersedes every older one still here.
        let older: Vec<AttemptKey> = self
            .shared
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(job, attempt)| *job == key.0 && *attempt < key.1)
            .cloned()
            .collect();
        for old in older {
            tracing::info!(job = %old.0, attempt = old.1, "superseded by attempt {}", key.1);
            self.cancel(&old);
        }
        let shared = Arc::clone(&self.shared);
        let paths = Paths {
            data_dir: shared.config.data_dir.clone(),
            allowed: shared.config.allowed_paths.clone(),
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
            .map_err(|e| e.status())?
        };
        {
            // A cancel that came while the deployment was prepared wins: the attempt never
            // starts, so it cannot run untracked.
            let mut attempts = shared.attempts.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_cancelled(&key) {
                return Err(cancelled().status());
            }
            attempts.insert(key.clone(), Arc::clone(&prepared.running));
        }
        tracing::info!(job = %key.0, attempt = key.1, tasks = ?request.tasks, "deployed");
        run_attempt(Arc::clone(&shared), key, prepared)
            .map_err(|e| Status::internal(format!("cannot start a thread: {e}")))?;
        Ok(Response::new(Empty {}))
    }

    async fn cancel_attempt(
        &self,
        request: Request<CancelAttemptRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.cancel(&(r.job_id, r.attempt));
        Ok(Response::new(Empty {}))
    }

    async fn trigger_checkpoint(
        &self,
        request: Request<TriggerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let Some(running) = self.shared.attempt(&r.job_id, r.attempt) else {
            return Err(WorkerError::UnknownAttempt {
                job: r.job_id,
                attempt: r.attempt,
            }
            .status());
        };
        let dir = std::path::PathBuf::from(&r.store_dir);
        let store = tokio::task::spawn_blocking(move || CheckpointStore::open_dir(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| WorkerError::Checkpoint(e).status())?;
        running.link.trigger(
            UploadTarget {
                store,
                checkpoint: r.checkpoint,
                incremental: r.incremental,
            },
            r.term,
        );
        Ok(Response::new(Empty {}))
    }

    async fn checkpoint_complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        // The commit of an attempt this worker does not run cannot be done here: saying so
        // (rather than "done") makes the leader restart the job, whose restore commits it.
        let Some(running) = self.shared.attempt(&r.job_id, r.attempt) else {
            return Err(WorkerError::UnknownAttempt {
                job: r.job_id,
                attempt: r.attempt,
            }
            .status());
        };
        tokio::task::spawn_blocking(move || {
            let store = CheckpointStore::open_dir(std::path::Path::new(&r.location))?;
            let metadata: CheckpointMetadata = if r.metadata_json.is_empty() {
                store.load(r.checkpoint)?
            } else {
                serde_json::from_slice(&r.metadata_json)
                    .map_err(|e| WorkerError::Job(format!("unreadable checkpoint metadata: {e}")))?
            };
            running.commit(&metadata, &store)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e: WorkerError| e.status())?;
        Ok(Response::new(Empty {}))
    }

    async fn describe_attempt(
        &self,
        request: Request<DescribeAttemptRequest>,
    ) -> Result<Response<AttemptDescription>, Status> {
        let r = request.into_inner();
        let Some(running) = self.shared.attempt(&r.job_id, r.attempt) else {
            return Ok(Response::new(AttemptDescription::default()));
        };
        running.link.observe_term(r.term);
        let end = running
            .end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Response::new(AttemptDescription {
            known: true,
            ended: end.is_some(),
            end,
            finished: running.link.finished_reports(),
        }))
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
        cancelled: Mutex::default(),
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
            use eddy_proto::net::allow;
            use eddy_security::Role;
            use tonic::service::interceptor::InterceptedService as Guarded;
            // Who may call what (with TLS): deploy, trigger, commit only from a coordinator;
            // records only from another worker.
            let router = eddy_proto::net::server()
                .add_service(Guarded::new(control, allow(&[Role::Coordinator])))
                .add_service(Guarded::new(exchange, allow(&[Role::Worker])));
            let served = eddy_proto::net::serve(
                router,
                listener,
                rx,
                eddy_proto::net::Clients::CertificateRequired,
            )
            .await;
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

//! The coordinator: a node of a 3-node Raft group (openraft). The replicated state
//! ([`state::ClusterState`]) holds jobs, workers, placements and completed checkpoints; the
//! leader alone schedules attempts onto worker slots and drives each job's checkpoints
//! ([`leader`]). Every node serves the client API and the worker control service ([`api`]);
//! followers point callers to the leader.

pub mod api;
pub mod error;
pub mod job;
pub mod leader;
pub mod raft;
pub mod state;
pub mod workers;

use eddy_proto::v1::client_api_server::ClientApiServer;
use eddy_proto::v1::coordinator_control_server::CoordinatorControlServer;
use leader::{Leader, LeaderOptions};
use raft::{RaftNode, RaftOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Wall-clock milliseconds since the epoch (0 if the clock is before it): the timestamps of
/// the replicated state (submissions, checkpoints, tokens, audit records).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a coordinator node is started.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub id: u64,
    /// Where this node listens; must be its entry in `peers`.
    pub listen: String,
    /// Every node of the group, this one included: id → HOST:PORT.
    pub peers: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub raft: RaftOptions,
    pub leader: LeaderOptions,
    /// Where jobs may read and write; `None`: anywhere (a cluster run with `--insecure`).
    pub allowed_paths: Option<eddy_security::paths::AllowedPaths>,
    /// Where the client API listens, apart from Raft and the workers' control service (so a
    /// firewall can open it alone); `None`: on `listen` with them.
    pub client_listen: Option<String>,
}

/// A running coordinator node.
pub struct CoordinatorHandle {
    pub raft: RaftNode,
    pub leader: Arc<Leader>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CoordinatorHandle {
    /// Stops serving and leaves the group (the others carry on).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.raft.shutdown().await;
    }
}

/// Starts a coordinator node on the current tokio runtime.
pub async fn start(config: CoordinatorConfig) -> anyhow::Result<CoordinatorHandle> {
    std::fs::create_dir_all(&config.data_dir)?;
    let (listener, _) = eddy_proto::net::bind(&config.listen).await?;
    let client_listener = match &config.client_listen {
        Some(addr) => Some(eddy_proto::net::bind(addr).await?.0),
        None => None,
    };
    let raft = RaftNode::start(
        config.id,
        config.peers.clone(),
        &config.data_dir,
        config.raft.clone(),
    )
    .await?;
    let leader = Arc::new(Leader::new(raft.clone(), config.leader.clone()));
    let api = api::Api {
        leader: Arc::clone(&leader),
        default_checkpoint_root: config.data_dir.join("checkpoints"),
        allowed_paths: config.allowed_paths.clone(),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = {
        let rx = shutdown_rx.clone();
        let raft_service = raft.service();
        let client = ClientApiServer::new(api.clone());
        let control = CoordinatorControlServer::new(api)
            .max_decoding_message_size(eddy_proto::net::MAX_MESSAGE_BYTES);
        tokio::spawn(async move {
            use eddy_proto::net::{allow, allow_without_certificate, Clients};
            use eddy_security::Role;
            use tonic::service::interceptor::InterceptedService as Guarded;
            // Who may call what (with TLS): Raft between coordinators, the control service
            // from workers, the client API from clients. On a client port of its own, a
            // client may come without a certificate (its token is then all it has).
            let mut router = eddy_proto::net::server()
                .add_service(Guarded::new(raft_service, allow(&[Role::Coordinator])))
                .add_service(Guarded::new(control, allow(&[Role::Worker])));
            let client_port = match client_listener {
                None => {
                    router = router.add_service(Guarded::new(client, allow(&[Role::Client])));
                    None
                }
                Some(listener) => {
                    let client = Guarded::new(client, allow_without_certificate(&[Role::Client]));
                    let router = eddy_proto::net::server().add_service(client);
                    let rx = rx.clone();
                    Some(tokio::spawn(eddy_proto::net::serve(
                        router,
                        listener,
                        rx,
                        Clients::CertificateOptional,
                    )))
                }
            };
            let served =
                eddy_proto::net::serve(router, listener, rx, Clients::CertificateRequired).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "coordinator server failed");
            }
            if let Some(Ok(Err(e))) = match client_port {
                Some(task) => Some(task.await),
                None => None,
            } {
                tracing::error!(error = %e, "client API server failed");
            }
        })
    };
    let duties = {
        let leader = Arc::clone(&leader);
        let id = config.id;
        let mut rx = shutdown_rx;
        tokio::spawn(async move {
            loop {
                leader.tick().await;
                let status = leader.raft.status();
                // Labelled by node: `eddy local` runs three coordinators in one process.
                let node = [("node", id.to_string())];
                metrics::gauge!("eddy_raft_term", &node).set(status.term as f64);
                metrics::gauge!("eddy_raft_leader", &node).set(status.leader.unwrap_or(0) as f64);
                metrics::gauge!("eddy_raft_commit_index", &node).set(status.commit_index as f64);
                metrics::gauge!("eddy_raft_is_leader", &node)
                    .set(f64::from(u8::from(status.is_leader)));
                if status.is_leader {
                    // Read in place: the state (jobs, tokens, the audit log) is not cloned.
                    let (total, free, workers) = leader.raft.with_state(|state| {
                        let total: u32 = state.workers.values().map(|w| w.slots).sum();
                        let free: u32 = state.free_slots().values().sum();
                        (total, free, state.workers.len())
                    });
                    metrics::gauge!("eddy_slots_free").set(free as f64);
                    metrics::gauge!("eddy_slots_used").set((total - free) as f64);
                    metrics::gauge!("eddy_workers").set(workers as f64);
                }
                tokio::select! {
                    _ = tokio::time::sleep(leader.options().tick) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        })
    };
    Ok(CoordinatorHandle {
        raft,
        leader,
        shutdown: shutdown_tx,
        tasks: vec![server, duties],
    })
}

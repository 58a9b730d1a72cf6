//! The coordinators' Raft group (openraft 0.9, storage v2).
//!
//! Every coordinator runs a [`RaftNode`]: the replicated log and vote live in RocksDB under
//! `DATA_DIR/raft/log`, the state machine ([`ClusterState`]) in memory with snapshots in
//! `DATA_DIR/raft/snapshot.json`, so a restarted node reloads its snapshot, re-applies its log and
//! then catches up with the leader. Peers talk over gRPC ([`network`]).
//!
//! The group is static: every node is started with the same peer map, and the node with the
//! lowest id initializes the cluster the first time (later starts find the membership on disk).

pub mod log_store;
pub mod network;
pub mod state_machine;

use crate::state::{ClusterState, Command, CommandResult};
use eddy_proto::v1::raft_service_server::RaftServiceServer;
use log_store::LogStore;
use network::{NetworkFactory, RaftGrpc};
use openraft::error::{ClientWriteError, InitializeError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use state_machine::{Applied, StateMachineStore};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

openraft::declare_raft_types!(
    /// The types Eddy's Raft group replicates: [`Command`]s producing [`CommandResult`]s, between
    /// nodes identified by `u64` and reached at a `host:port` ([`BasicNode::addr`]).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running openraft instance of Eddy's types.
pub type EddyRaft = openraft::Raft<TypeConfig>;

/// A Raft node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("node {id} is not in the peer list ({peers}); every node must list itself too")]
    NotAPeer { id: u64, peers: String },
    #[error("peer {id} has a bad address: {source}")]
    BadPeer {
        id: u64,
        #[source]
        source: eddy_proto::net::NetError,
    },
    #[error("cannot create the raft directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open the raft log at {} (is another coordinator using this data dir?): {source}",
        path.display()
    )]
    OpenLog {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot load the raft snapshot in {}: {source}", path.display())]
    OpenSnapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid raft options: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft failed to start: {0}")]
    Start(String),
}

/// A proposal was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals. `leader` is `(id, address)` when a leader is known.
    #[error("{}", not_leader_message(.leader))]
    NotLeader { leader: Option<(u64, String)> },
    /// The state machine refused the command (it does not fit the state: a cancelled job,
    /// slots taken meanwhile); nothing changed.
    #[error("{0}")]
    Rejected(String),
    #[error("the proposal failed: {0}")]
    Other(String),
}

fn not_leader_message(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("not the leader; the leader is node {id} at {addr}"),
        None => "not the leader, and no leader is known yet (an election may be in progress); \
                 retry shortly"
            .to_string(),
    }
}

/// Timing and snapshot knobs. The defaults suit a LAN; elections take 0.4–0.8 s.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// How often the leader sends heartbeats (and the deadline of each append RPC).
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in this range starts an election.
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot every this many applied entries (which lets the log be purged).
    pub snapshot_every: u64,
    /// How many entries before the snapshot to keep in the log, so a slightly lagging follower
    /// catches up from the log instead of receiving the whole snapshot.
    pub keep_logs: u64,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 500,
            keep_logs: 500,
        }
    }
}

/// A snapshot of the node's Raft metrics, for status pages and `eddy status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    pub leader: Option<u64>,
    /// The last applied index (applied entries are committed; this may lag the leader's commit
    /// index by a heartbeat).
    pub commit_index: u64,
    pub last_log_index: u64,
    pub is_leader: bool,
}

/// One coordinator's member of the Raft group. Cloning shares it.
#[derive(Clone)]
pub struct RaftNode {
    id: u64,
    raft: EddyRaft,
    applied: Arc<RwLock<Applied>>,
    peers: Arc<BTreeMap<u64, String>>,
}

impl RaftNode {
    /// Opens (or creates) the node's storage under `data_dir/raft/`, starts openraft, and, when
    /// the cluster has never been initialized, lets the node with the lowest id in `peers`
    /// initialize it with every peer as a voter. `peers` maps each node id (this one included)
    /// to its `host:port`.
    ///
    /// The caller serves [`RaftNode::service`] on this node's address.
    pub async fn start(
        id: u64,
        peers: BTreeMap<u64, String>,
        data_dir: &Path,
        options: RaftOptions,
    ) -> Result<RaftNode, RaftError> {
        if !peers.contains_key(&id) {
            return Err(RaftError::NotAPeer {
                id,
                peers: peers
                    .iter()
                    .map(|(id, addr)| format!("{id}={addr}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for (&peer, addr) in &peers {
            eddy_proto::net::channel(addr, Duration::from_secs(1))
                .map_err(|source| RaftError::BadPeer { id: peer, source })?;
        }

        let dir = data_dir.join("raft");
        std::fs::create_dir_all(&dir).map_err(|source| RaftError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let log_path = dir.join("log");
        let log_store = LogStore::open(&log_path).map_err(|source| RaftError::OpenLog {
            path: log_path.clone(),
            source,
        })?;
        let state_machine =
            StateMachineStore::open(&dir).map_err(|source| RaftError::OpenSnapshot {
                path: dir.clone(),
                source,
            })?;
        let applied = state_machine.applied();

        let config = Config {
            cluster_name: "eddy".to_string(),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_ms.0,
            election_timeout_max: options.election_timeout_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
            max_in_snapshot_log_to_keep: options.keep_logs,
            // Snapshot chunks are JSON (about 4 bytes per data byte): keep them well under the
            // gRPC message limit, and give each chunk time to be written to disk.
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 5_000,
            ..Default::default()
        }
        .validate()?;

        let raft = EddyRaft::new(
            id,
            Arc::new(config),
            NetworkFactory,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftError::Start(e.to_string()))?;

        let node = RaftNode {
            id,
            raft,
            applied,
            peers: Arc::new(peers),
        };

        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Start(e.to_string()))?;
        let lowest = node.peers.keys().next().copied();
        if !initialized && lowest == Some(id) {
            let members: BTreeMap<u64, BasicNode> = node
                .peers
                .iter()
                .map(|(&id, addr)| (id, BasicNode::new(addr)))
                .collect();
            tracing::info!(id, ?members, "initializing the raft cluster");
            match node.raft.initialize(members).await {
                Ok(()) => {}
                Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(id, "the raft cluster is already initialized: {e}");
                }
                Err(e) => return Err(RaftError::Start(e.to_string())),
            }
        }
        tracing::info!(id, dir = %dir.display(), "raft node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The gRPC service peers send Raft messages to; add it to this node's tonic server.
    pub fn service(&self) -> RaftServiceServer<RaftGrpc> {
        RaftGrpc::server(self.raft.clone())
    }

    /// Replicates `command` and returns its result once it is committed and applied here.
    /// Only the leader accepts proposals; others answer [`ProposeError::NotLeader`], naming the
    /// leader so the caller can redirect.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(response) => match response.data {
                CommandResult::Rejected(reason) => Err(ProposeError::Rejected(reason)),
                result => Ok(result),
            },
            Err(openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.map(|id| {
                    let addr = f
                        .leader_node
                        .map(|n| n.addr)
                        .or_else(|| self.addr_of(id))
                        .unwrap_or_else(|| "an unknown address".to_string());
                    (id, addr)
                });
                Err(ProposeError::NotLeader { leader })
            }
            Err(e) => Err(ProposeError::Other(e.to_string())),
        }
    }

    /// Reads the applied state without copying it (for frequent, small questions such as a
    /// heartbeat's "is this worker known").
    pub fn with_state<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> T {
        read(&self.applied.read().unwrap_or_else(|e| e.into_inner()).state)
    }

    /// A copy of the applied state machine data.
    pub fn state(&self) -> ClusterState {
        self.applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .state
            .clone()
    }

    /// The current leader as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// The current leader's `host:port`.
    pub fn leader_addr(&self) -> Option<String> {
        self.leader().and_then(|id| self.addr_of(id))
    }

    /// Whether this node is the leader now (it may learn otherwise at any moment; proposals
    /// are what is safe).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The current term as this node knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Term, leader and log positions, from openraft's metrics.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        RaftStatus {
            term: m.current_term,
            leader: m.current_leader,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            is_leader: m.state == ServerState::Leader && m.current_leader == Some(self.id),
        }
    }

    /// The `host:port` of node `id`: from the replicated membership, else the peer list.
    pub fn addr_of(&self, id: u64) -> Option<String> {
        let from_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        from_membership.or_else(|| self.peers.get(&id).cloned())
    }

    /// Waits until some leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Some(leader);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Stops Raft on this node (its storage closes once openraft's tasks end). The gRPC
    /// service keeps answering with "stopped" errors until the server is stopped too.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(id = self.id, "raft did not shut down cleanly: {e}");
        } else {
            tracing::info!(id = self.id, "raft node stopped");
        }
    }

    /// The underlying openraft instance, for what this wrapper does not expose.
    pub fn raft(&self) -> &EddyRaft {
        &self.raft
    }
}

//! Raft messages between coordinators, over gRPC (`RaftService` in `eddy.proto`).
//!
//! Each RPC carries one `RaftPayload` whose bytes are the JSON of openraft's request; the reply
//! is the JSON of `Result<response, RaftError>`, so an error raised by the remote Raft (e.g. it
//! is shutting down) comes back as that error rather than as an opaque gRPC status. gRPC
//! statuses are left for transport problems.

use super::{EddyRaft, TypeConfig};
use eddy_proto::net::MAX_MESSAGE_BYTES;
use eddy_proto::v1::raft_service_client::RaftServiceClient;
use eddy_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use eddy_proto::v1::RaftPayload;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tonic::transport::Channel;

/// Upper bound of any single Raft RPC; openraft passes tighter per-call deadlines.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates a [`PeerClient`] per peer (openraft asks for one per replication stream).
#[derive(Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        let client = eddy_proto::net::channel(&node.addr, RPC_TIMEOUT)
            .map(|ch| {
                RaftServiceClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|e| e.to_string());
        if let Err(e) = &client {
            tracing::warn!(target, "cannot build a channel to raft peer: {e}");
        }
        PeerClient {
            target,
            node: node.clone(),
            client,
        }
    }
}

/// The gRPC client of one peer. The channel connects lazily and reconnects by itself.
pub struct PeerClient {
    target: u64,
    node: BasicNode,
    /// `Err` when the peer's address is unusable: every call then reports it unreachable.
    client: Result<RaftServiceClient<Channel>, String>,
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PayloadError(String);

impl PeerClient {
    /// Sends one RPC: `Resp` and `E` are the reply's success and remote error types.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&PayloadError(
                    e.clone(),
                ))))
            }
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let err = PayloadError(format!(
                "{kind:?} to node {} at {}: {}",
                self.target,
                self.node.addr,
                status.message()
            ));
            match status.code() {
                // Connection refused, peer down: openraft backs off before retrying.
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                _ => RPCError::Network(NetworkError::new(&err)),
            }
        })?;
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// The three Raft RPCs.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// The server side of `RaftService`: decodes a request, hands it to the local Raft and encodes
/// its result (success or Raft error) as the reply.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: EddyRaft,
}

impl RaftGrpc {
    /// Wraps `raft` in a `RaftServiceServer` accepting messages up to
    /// [`MAX_MESSAGE_BYTES`] (snapshot chunks are large).
    pub fn server(raft: EddyRaft) -> RaftServiceServer<RaftGrpc> {
        RaftServiceServer::new(RaftGrpc { raft })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(request: tonic::Request<RaftPayload>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("bad raft payload: {e}")))
}

/// The largest snapshot a node accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

fn encode<T: Serialize>(result: &T) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
    let data = serde_json::to_vec(result)
        .map_err(|e| tonic::Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(tonic::Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: VoteRequest<u64> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        // openraft writes a chunk at its offset into a buffer it grows with zeros: a chunk
        // claiming an offset of 1 TB aborted the node on the allocation. A snapshot is the
        // cluster state as JSON; none comes near this.
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(tonic::Status::invalid_argument(format!(
                "a snapshot chunk ending at byte {end} is past the {MAX_SNAPSHOT_BYTES}-byte limit"
            )));
        }
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

//! The coordinator's gRPC services: the client API (`eddy submit`, `list`, ...) and the control
//! service workers call. On a follower every call answers "not the leader" with the leader's
//! address (see `eddy_proto::leader`), and clients follow it.

use crate::error::CoordinatorError;
use crate::job::{CountersFrom, JobEvent};
use crate::leader::Leader;
use crate::now_ms;
use crate::state::{
    AuditRecord, CheckpointRecord, Command, CommandResult, JobRecord, JobSpec, JobState,
    TokenRecord,
};
use eddy_proto::leader::not_leader;
use eddy_proto::v1::client_api_server::ClientApi;
use eddy_proto::v1::coordinator_control_server::CoordinatorControl;
use eddy_proto::v1::*;
use eddy_runtime::checkpoint::coordinator::{CoordinatorInput, ReportedSubtask};
use eddy_security::token::{self, TokenRole};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Both services, over the same leader.
#[derive(Clone)]
pub struct Api {
    pub leader: Arc<Leader>,
    /// Where jobs submitted without a checkpoint directory keep their checkpoints.
    pub default_checkpoint_root: std::path::PathBuf,
    /// Where jobs may read and write (`--allow-path`); `None`: anywhere.
    pub allowed_paths: Option<eddy_security::paths::AllowedPaths>,
}

impl Api {
    fn require_leader(&self) -> Result<(), Status> {
        if self.leader.raft.is_leader() {
            Ok(())
        } else {
            Err(not_leader(self.leader.raft.leader_addr()))
        }
    }

    async fn propose(&self, command: Command) -> Result<CommandResult, Status> {
        self.leader
            .raft
            .propose(command)
            .await
            .map_err(|e| CoordinatorError::from(e).status())
    }

    fn job(&self, id: &str) -> Result<JobRecord, Status> {
        self.leader
            .raft
            .with_state(|s| s.jobs.get(id).cloned())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no job `{id}` (eddy list shows the jobs the cluster knows)"
                ))
            })
    }

    fn leader_id(&self) -> u64 {
        self.leader.raft.leader().unwrap_or(0)
    }

    async fn submit_call(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let mut spec = JobSpec {
            job_text: r.job_text,
            job_path: r.job_path,
            params: r.params.into_iter().collect(),
            parallelism: (r.parallelism > 0).then_some(r.parallelism),
            checkpoint_interval_ms: r.checkpoint_interval_ms,
            checkpoint_dir: r.checkpoint_dir,
            retain_checkpoints: if r.retain_checkpoints == 0 {
                3
            } else {
                r.retain_checkpoints
            },
            generate_events: (r.generate_events > 0).then_some(r.generate_events),
            generate_rate: r.generate_rate.max(1),
            max_source_rate: (r.max_source_rate > 0).then_some(r.max_source_rate),
            topics_from: (!r.topics_from.is_empty()).then_some(r.topics_from),
            sealed_params: Default::default(),
        };
        // Secret parameters: sealed with the cluster's key before anything is stored, and
        // never echoed (an error that quotes one shows *** instead). Those the job file
        // declares `secret = true` are secret however they were given.
        let mut secrets: Vec<(String, String)> = r.secret_params.into_iter().collect();
        if self.leader.options().secrets.is_some() {
            let declared = eddy_jobs::secret_params(&spec.job_path, &spec.job_text)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            for name in declared {
                if let Some(value) = spec.params.remove(&name) {
                    secrets.push((name, value));
                }
            }
        }
        let hide = |message: String| {
            secrets
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .fold(message, |m, (_, v)| m.replace(v.as_str(), "***"))
        };
        let mut plain = spec.clone();
        if !secrets.is_empty() {
            let key = self.leader.options().secrets.as_ref().ok_or_else(|| {
                Status::failed_precondition(
                    "this cluster keeps no secrets: start the coordinators with --secrets-key (eddy certs init makes one)",
                )
            })?;
            for (name, value) in &secrets {
                if spec.params.contains_key(name) {
                    return Err(Status::invalid_argument(format!(
                        "`{name}` is given both as a parameter and as a secret parameter"
                    )));
                }
                let sealed = key
                    .seal(name, value)
                    .map_err(|e| Status::internal(e.to_string()))?;
                spec.sealed_params.insert(name.clone(), sealed);
                plain.params.insert(name.clone(), value.clone());
            }
        }
        // Compiling reads no files but is not free: off the async runtime.
        let graph = tokio::task::spawn_blocking(move || plain.compile())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(hide(e.to_string())))?;
        if let Some(allowed) = &self.allowed_paths {
            for (what, path) in job_paths(&graph, &spec, &r.from_savepoint) {
                allowed
                    .check(&what, &path)
                    .map_err(|e| Status::permission_denied(hide(e.to_string())))?;
            }
        }
        let parallelism = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        // Kept as hashes: an output path may come from a secret parameter, and the replicated
        // state holds no secret in plaintext; equal paths still have equal hashes.
        let output_paths = output_directories(&graph);
        let outputs: Vec<String> = output_paths
            .iter()
            .map(|o| format!("sha256:{}", token::hash(o)))
            .collect();
        let shown: Vec<(String, String)> = outputs.iter().cloned().zip(output_paths).collect();
        if spec.checkpoint_interval_ms > 0 && spec.checkpoint_dir.is_empty() {
            // Unique per submission: job ids are assigned by the state machine, so use time.
            let stamp = now_ms();
            spec.checkpoint_dir = self
                .default_checkpoint_root
                // The job's name is the user's text: only its plain characters name a directory.
                .join(format!("{}-{stamp}", plain_name(&graph.name)))
                .display()
                .to_string();
        }
        let at_ms = now_ms();
        let name = graph.name.clone();
        let from_savepoint = if r.from_savepoint.is_empty() {
            None
        } else {
            let dir = r.from_savepoint.clone();
            Some(
                tokio::task::spawn_blocking(move || savepoint_to_start_from(&dir, &graph, at_ms))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(Status::invalid_argument)?,
            )
        };
        match self
            .propose(Command::SubmitJob {
                name,
                spec: Box::new(spec),
                parallelism,
                at_ms,
                from_savepoint,
                outputs,
            })
            .await
            .map_err(|status| {
                // A conflict names the directory by its hash: name it as the submitter did.
                let message = shown
                    .iter()
                    .fold(status.message().to_string(), |m, (hash, path)| {
                        m.replace(hash.as_str(), path)
                    });
                Status::new(status.code(), hide(message))
            })? {
            CommandResult::JobSubmitted(job_id) => Ok(Response::new(SubmitResponse { job_id })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn cancel_call(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        self.require_leader()?;
        let job = self.job(&request.into_inner().job_id)?;
        if job.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "{} is already {}",
                job.id,
                job.state.name()
            )));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.leader.send(&job.id, JobEvent::Cancel(tx)) {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(result)) => result.map_err(|e| e.status())?,
                Ok(Err(_)) => return Err(CoordinatorError::LeaderChanged.status()),
                Err(_) => {
                    return Err(Status::deadline_exceeded(
                        "the cancel did not complete within 60 s; check `eddy status`",
                    ))
                }
            }
        } else {
            // No driver yet (just submitted, or a new leader): Raft alone decides; a driver
            // that starts later finds the job cancelled and never deploys it.
            self.propose(Command::SetJobState {
                job: job.id.clone(),
                state: JobState::Cancelled,
                message: "cancelled by a user".into(),
            })
            .await?;
        }
        Ok(Response::new(CancelResponse {}))
    }

    async fn savepoint_call(
        &self,
        request: Request<SavepointRequest>,
    ) -> Result<Response<SavepointResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let job = self.job(&r.job_id)?;
        let dir = if r.dir.is_empty() {
            format!("{}/savepoints", job.spec.checkpoint_dir)
        } else {
            if let Some(allowed) = &self.allowed_paths {
                allowed
                    .check("the savepoint directory", &r.dir)
                    .map_err(|e| Status::permission_denied(e.to_string()))?;
            }
            r.dir
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let event = JobEvent::Savepoint {
            dir,
            stop: r.stop,
            reply: tx,
        };
        if !self.leader.send(&job.id, event) {
            return Err(Status::failed_precondition(format!(
                "{} is {}",
                job.id,
                job.state.name()
            )));
        }
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(Ok((checkpoint, location)))) => Ok(Response::new(SavepointResponse {
                checkpoint,
                location,
            })),
            Ok(Ok(Err(e))) => Err(Status::aborted(e.to_string())),
            Ok(Err(_)) => Err(Status::aborted(
                "the job's attempt ended before the savepoint completed",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "the savepoint did not complete within 120 s",
            )),
        }
    }

    async fn create_token_call(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let bootstrap = r.bootstrap;
        let role =
            TokenRole::parse(&r.role).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if bootstrap && role != TokenRole::Admin {
            return Err(Status::invalid_argument(
                "the bootstrap token is an admin token",
            ));
        }
        let (secret, hash) =
            token::generate(&r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.propose(Command::CreateToken {
            token: TokenRecord {
                name: r.name.clone(),
                role,
                hash,
                created_at_ms: now_ms(),
                revoked: false,
                expires_at_ms: (r.valid_for_ms > 0)
                    .then(|| now_ms().saturating_add(r.valid_for_ms)),
            },
            only_first: bootstrap,
        })
        .await?;
        Ok(Response::new(CreateTokenResponse { token: secret }))
    }

    async fn revoke_token_call(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.require_leader()?;
        let name = request.into_inner().name;
        self.propose(Command::RevokeToken { name: name.clone() })
            .await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    /// Runs a call that changes something and appends it to the audit log in Raft: who (the
    /// token's name), what, on what, when and the result. A record that cannot be written
    /// (no quorum) is logged instead: the change itself already happened or failed.
    async fn audited<T>(
        &self,
        who: &str,
        action: &str,
        target: String,
        call: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let result = call.await;
        if matches!(&result, Err(s) if s.code() == tonic::Code::Unavailable) {
            // Not the leader (the client goes on to it) or no quorum: nothing happened here.
            return result;
        }
        let record = AuditRecord {
            at_ms: now_ms(),
            who: who.to_string(),
            action: action.to_string(),
            target,
            result: match &result {
                Ok(_) => "ok".to_string(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            },
        };
        tracing::info!(who, action, target = %record.target, result = %record.result, "audit");
        if let Err(e) = self.leader.raft.propose(Command::Audit(record)).await {
            tracing::warn!(error = %e, "the audit record was not written to Raft");
        }
        result
    }

    /// Who calls, if they may do what needs `needed`: the name of the bearer token in the
    /// call's `authorization` metadata, checked against the replicated tokens. A cluster run
    /// with `--insecure` (no TLS) checks nothing: it has no security at all.
    fn authorize<T>(&self, request: &Request<T>, needed: TokenRole) -> Result<String, Status> {
        if !eddy_proto::net::tls_enabled() {
            return Ok("anonymous".into());
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "a token is required: set EDDY_TOKEN (eddy token create; eddy local prints one)",
                )
            })?;
        let (name, hash) = token::parse(presented).ok_or_else(|| {
            Status::unauthenticated("the token is malformed (expected NAME.SECRET)")
        })?;
        let role = self.leader.raft.with_state(|s| {
            s.tokens
                .get(name)
                .filter(|t| !t.revoked && t.hash == hash)
                .filter(|t| t.expires_at_ms.is_none_or(|at| now_ms() < at))
                .map(|t| t.role)
        });
        match role {
            None => Err(Status::unauthenticated(format!(
                "the token `{name}` is unknown, revoked, expired or wrong"
            ))),
            Some(role) if !role.allows(needed) => Err(Status::permission_denied(format!(
                "the token `{name}` is a {role} token; this needs {needed}"
            ))),
            Some(_) => Ok(name.to_string()),
        }
    }
}

fn summary(job: &JobRecord) -> JobSummary {
    JobSummary {
        job_id: job.id.clone(),
        name: job.name.clone(),
        state: job.state.name().to_string(),
        message: job.message.clone(),
        parallelism: job.parallelism,
        attempt: job.attempt,
    }
}

#[tonic::async_trait]
impl ClientApi for Api {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let who = self.authorize(&request, TokenRole::Operator)?;
        let target = request.get_ref().job_path.clone();
        self.audited(&who, "submit", target, self.submit_call(request))
            .await
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        self.authorize(&request, TokenRole::Viewer)?;
        self.require_leader()?;
        let jobs = self
            .leader
            .raft
            .with_state(|s| s.jobs.values().map(summary).collect());
        Ok(Response::new(ListJobsResponse {
            jobs,
            leader: self.leader_id(),
        }))
    }

    async fn job_status(
        &self,
        request: Request<JobStatusRequest>,
    ) -> Result<Response<JobStatusResponse>, Status> {
        self.authorize(&request, TokenRole::Viewer)?;
        self.require_leader()?;
        let job = self.job(&request.into_inner().job_id)?;
        let mut tasks = self.leader.ctx().counters().tasks(&job.id);
        tasks.sort_by(|a, b| (&a.name, a.subtask).cmp(&(&b.name, b.subtask)));
        // Records in: what operators took in; records out: what sources and operators emitted
        // (the sum over every operator subtask of the current attempt).
        let records_in = tasks.iter().map(|t| t.records_in).sum();
        let records_out = tasks.iter().map(|t| t.records_out).sum();
        let (last, at) = job
            .last_checkpoint
            .as_ref()
            .map_or((0, 0), |c| (c.id, c.completed_at_ms));
        Ok(Response::new(JobStatusResponse {
            restarts: job.restarts,
            job: Some(summary(&job)),
            leader: self.leader_id(),
            tasks,
            last_checkpoint: last,
            last_checkpoint_at_ms: at,
            records_in,
            records_out,
        }))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let who = self.authorize(&request, TokenRole::Operator)?;
        let target = request.get_ref().job_id.clone();
        self.audited(&who, "cancel", target, self.cancel_call(request))
            .await
    }

    async fn savepoint(
        &self,
        request: Request<SavepointRequest>,
    ) -> Result<Response<SavepointResponse>, Status> {
        let who = self.authorize(&request, TokenRole::Operator)?;
        let target = request.get_ref().job_id.clone();
        self.audited(&who, "savepoint", target, self.savepoint_call(request))
            .await
    }

    async fn list_workers(
        &self,
        request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        self.authorize(&request, TokenRole::Viewer)?;
        self.require_leader()?;
        let mut workers: Vec<WorkerInfo> = self.leader.raft.with_state(|state| {
            let free = state.free_slots();
            state
                .workers
                .values()
                .map(|w| WorkerInfo {
                    id: w.id,
                    addr: w.addr.clone(),
                    slots: w.slots,
                    slots_used: w.slots - free.get(&w.id).copied().unwrap_or(0),
                    last_heartbeat_ms_ago: 0,
                })
                .collect()
        });
        for w in &mut workers {
            w.last_heartbeat_ms_ago = self
                .leader
                .last_heartbeat(w.id)
                .map_or(0, |d| d.as_millis() as u64);
        }
        Ok(Response::new(ListWorkersResponse {
            workers,
            leader: self.leader_id(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let bootstrap = request.get_ref().bootstrap;
        let who = if bootstrap {
            // Only the holder of a client certificate may bootstrap (a client port of its
            // own lets clients in without one); the state machine refuses it once any token
            // exists.
            if eddy_proto::net::tls_enabled() && request.peer_certs().is_none_or(|c| c.is_empty()) {
                return Err(Status::permission_denied(
                    "the first token is made with a client certificate (EDDY_TLS_DIR=DIR/client); a token alone cannot bootstrap",
                ));
            }
            "bootstrap".to_string()
        } else {
            self.authorize(&request, TokenRole::Admin)?
        };
        let target = request.get_ref().name.clone();
        self.audited(
            &who,
            "create-token",
            target,
            self.create_token_call(request),
        )
        .await
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let who = self.authorize(&request, TokenRole::Admin)?;
        let target = request.get_ref().name.clone();
        self.audited(
            &who,
            "revoke-token",
            target,
            self.revoke_token_call(request),
        )
        .await
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.authorize(&request, TokenRole::Admin)?;
        self.require_leader()?;
        let tokens = self.leader.raft.with_state(|s| {
            s.tokens
                .values()
                .map(|t| TokenInfo {
                    name: t.name.clone(),
                    role: t.role.name().to_string(),
                    created_at_ms: t.created_at_ms,
                    revoked: t.revoked,
                    expires_at_ms: t.expires_at_ms.unwrap_or(0),
                })
                .collect()
        });
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        self.authorize(&request, TokenRole::Admin)?;
        self.require_leader()?;
        let since = request.into_inner().since_ms;
        let entries = self.leader.raft.with_state(|s| {
            s.audit
                .iter()
                .filter(|a| a.at_ms >= since)
                .map(|a| AuditEntry {
                    at_ms: a.at_ms,
                    who: a.who.clone(),
                    action: a.action.clone(),
                    target: a.target.clone(),
                    result: a.result.clone(),
                })
                .collect()
        });
        Ok(Response::new(ListAuditResponse { entries }))
    }
}

#[tonic::async_trait]
impl CoordinatorControl for Api {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        match self
            .propose(Command::RegisterWorker {
                addr: r.addr.clone(),
                slots: r.slots,
            })
            .await?
        {
            CommandResult::WorkerRegistered(id) => {
                self.leader.registered(id);
                tracing::info!(id, addr = %r.addr, slots = r.slots, "worker registered");
                Ok(Response::new(RegisterResponse { worker_id: id }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let known = self.leader.heartbeat(r.worker_id, r.attempts);
        Ok(Response::new(HeartbeatResponse { known }))
    }

    async fn acknowledge_checkpoint(
        &self,
        request: Request<CheckpointAck>,
    ) -> Result<Response<Empty>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        if r.term > self.leader.raft.term() {
            // A newer leader triggered it: this node was deposed and does not know it yet.
            return Err(not_leader(None));
        }
        let input = checkpoint_input(&r).map_err(Status::invalid_argument)?;
        self.leader.send(
            &r.job_id,
            JobEvent::Ack {
                attempt: r.attempt,
                input,
            },
        );
        Ok(Response::new(Empty {}))
    }

    async fn attempt_ended(
        &self,
        request: Request<AttemptEndedRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let addr = self
            .leader
            .raft
            .with_state(|s| s.workers.get(&r.worker_id).map(|w| w.addr.clone()))
            .unwrap_or_default();
        self.leader.ctx().counters().record(
            &r.job_id,
            r.attempt,
            r.worker_id,
            r.tasks.clone(),
            CountersFrom::End,
        );
        self.leader.send(
            &r.job_id.clone(),
            JobEvent::PartEnded {
                attempt: r.attempt,
                addr,
                report: r,
            },
        );
        Ok(Response::new(Empty {}))
    }
}

/// The latest savepoint in `dir`, if it is one `graph` can start from; else why not, naming the
/// directory and what to do.
fn savepoint_to_start_from(
    dir: &str,
    graph: &eddy_runtime::graph::JobGraph,
    at_ms: u64,
) -> Result<CheckpointRecord, String> {
    if !std::path::Path::new(dir).is_dir() {
        return Err(format!(
            "savepoint directory `{dir}` does not exist (check --from-savepoint; it must be reachable from the coordinators)"
        ));
    }
    let store = eddy_runtime::checkpoint::CheckpointStore::open_dir(std::path::Path::new(dir))
        .map_err(|e| e.to_string())?;
    let metadata = store
        .latest()
        .map_err(|e| format!("cannot read the savepoint in `{dir}`: {e}"))?
        .ok_or_else(|| format!("`{dir}` holds no completed savepoint (check --from-savepoint)"))?;
    if metadata.job != graph.name {
        return Err(format!(
            "savepoint {} in `{dir}` belongs to job `{}`, not `{}`",
            metadata.checkpoint, metadata.job, graph.name
        ));
    }
    eddy_operators::checkpointing::check_fits(graph, &metadata)?;
    Ok(CheckpointRecord {
        id: metadata.checkpoint,
        completed_at_ms: at_ms,
        finished: metadata.finished,
        location: dir.to_string(),
        savepoint: true,
    })
}

/// The directories the job's file sinks publish into (absolute, for comparing jobs).
/// Every path a job reads or writes, with what it is for (for the error that refuses it).
/// `name` with every character but letters, digits, `-` and `_` replaced by `_`.
fn plain_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn job_paths(
    graph: &eddy_runtime::graph::JobGraph,
    spec: &JobSpec,
    from_savepoint: &str,
) -> Vec<(String, String)> {
    let mut paths = graph.file_paths();
    for (what, path) in [
        ("the checkpoint directory", spec.checkpoint_dir.as_str()),
        ("the savepoint to start from", from_savepoint),
        ("--topics-from", spec.topics_from.as_deref().unwrap_or("")),
    ] {
        if !path.is_empty() {
            paths.push((what.to_string(), path.to_string()));
        }
    }
    paths
}

fn output_directories(graph: &eddy_runtime::graph::JobGraph) -> Vec<String> {
    use eddy_runtime::graph::{NodeKind, SinkConnector};
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Sink(spec) => match &spec.connector {
                SinkConnector::File { path }
                    if eddy_operators::sink_is_directory(&spec.connector) =>
                {
                    let p = std::path::Path::new(path);
                    Some(
                        std::path::absolute(p)
                            .unwrap_or_else(|_| p.to_path_buf())
                            .display()
                            .to_string()
                            .trim_end_matches('/')
                            .to_string(),
                    )
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// What a worker's acknowledgement tells the job's checkpoint coordinator (an error for one
/// that is not well formed: it comes from the network).
pub fn checkpoint_input(ack: &CheckpointAck) -> Result<CoordinatorInput, String> {
    let subtasks = decode_subtasks(&ack.subtasks_json)?;
    Ok(if ack.finished {
        CoordinatorInput::Finished {
            task: ack.task as usize,
            subtasks,
        }
    } else {
        CoordinatorInput::Ack {
            checkpoint: ack.checkpoint,
            task: ack.task as usize,
            subtasks,
        }
    })
}

/// Decodes an acknowledgement's subtask states.
pub(crate) fn decode_subtasks(json: &[u8]) -> Result<Vec<ReportedSubtask>, String> {
    serde_json::from_slice(json).map_err(|e| format!("bad acknowledgement: {e}"))
}

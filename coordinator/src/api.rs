//! The coordinator's gRPC services: the client API (`eddy submit`, `list`, ...) and the control
//! service workers call. On a follower every call answers "not the leader" with the leader's
//! address (see `eddy_proto::leader`), and clients follow it.

use crate::leader::{decode_subtasks, CountersFrom, Leader};
use crate::raft::ProposeError;
use crate::state::{CheckpointRecord, Command, CommandResult, JobRecord, JobSpec};
use eddy_proto::leader::not_leader;
use eddy_proto::v1::client_api_server::ClientApi;
use eddy_proto::v1::coordinator_control_server::CoordinatorControl;
use eddy_proto::v1::*;
use eddy_runtime::checkpoint::coordinator::{CoordinatorInput, ReportedSubtask};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Both services, over the same leader.
#[derive(Clone)]
pub struct Api {
    pub leader: Arc<Leader>,
    /// Where jobs submitted without a checkpoint directory keep their checkpoints.
    pub default_checkpoint_root: std::path::PathBuf,
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
            .map_err(|e| match e {
                ProposeError::NotLeader { leader } => not_leader(leader.map(|(_, a)| a)),
                other => Status::unavailable(other.to_string()),
            })
    }

    fn job(&self, id: &str) -> Result<JobRecord, Status> {
        self.leader
            .raft
            .state()
            .jobs
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no job `{id}` (eddy list shows the jobs the cluster knows)"
                ))
            })
    }

    fn leader_id(&self) -> u64 {
        self.leader.raft.leader().unwrap_or(0)
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
        };
        let graph = spec
            .compile()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let parallelism = graph.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        if spec.checkpoint_interval_ms > 0 && spec.checkpoint_dir.is_empty() {
            // Unique per submission: job ids are assigned by the state machine, so use time.
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            spec.checkpoint_dir = self
                .default_checkpoint_root
                .join(format!("{}-{stamp}", graph.name))
                .display()
                .to_string();
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let from_savepoint = if r.from_savepoint.is_empty() {
            None
        } else {
            Some(
                savepoint_to_start_from(&r.from_savepoint, &graph, at_ms)
                    .map_err(Status::invalid_argument)?,
            )
        };
        match self
            .propose(Command::SubmitJob {
                name: graph.name.clone(),
                spec,
                parallelism,
                at_ms,
                from_savepoint,
            })
            .await?
        {
            CommandResult::JobSubmitted(job_id) => Ok(Response::new(SubmitResponse { job_id })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        self.require_leader()?;
        let state = self.leader.raft.state();
        Ok(Response::new(ListJobsResponse {
            jobs: state.jobs.values().map(summary).collect(),
            leader: self.leader_id(),
        }))
    }

    async fn job_status(
        &self,
        request: Request<JobStatusRequest>,
    ) -> Result<Response<JobStatusResponse>, Status> {
        self.require_leader()?;
        let job = self.job(&request.into_inner().job_id)?;
        let mut tasks = self
            .leader
            .soft
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .task_statuses(&job.id, job.attempt);
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
        self.require_leader()?;
        let job = self.job(&request.into_inner().job_id)?;
        if job.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "{} is already {}",
                job.id,
                job.state.name()
            )));
        }
        self.leader
            .cancel(&job)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(CancelResponse {}))
    }

    async fn savepoint(
        &self,
        request: Request<SavepointRequest>,
    ) -> Result<Response<SavepointResponse>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let job = self.job(&r.job_id)?;
        let dir = if r.dir.is_empty() {
            format!("{}/savepoints", job.spec.checkpoint_dir)
        } else {
            r.dir
        };
        let rx = self
            .leader
            .savepoint(&job.id, &dir, r.stop)
            .map_err(Status::failed_precondition)?;
        self.leader.dispatch_pending().await;
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(Ok((checkpoint, location)))) => Ok(Response::new(SavepointResponse {
                checkpoint,
                location,
            })),
            Ok(Ok(Err(e))) => Err(Status::aborted(e)),
            Ok(Err(_)) => Err(Status::aborted(
                "the job's attempt ended before the savepoint completed",
            )),
            Err(_) => Err(Status::deadline_exceeded(
                "the savepoint did not complete within 120 s",
            )),
        }
    }

    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        self.require_leader()?;
        let state = self.leader.raft.state();
        let free = state.free_slots();
        let soft = self.leader.soft.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let workers = state
            .workers
            .values()
            .map(|w| WorkerInfo {
                id: w.id,
                addr: w.addr.clone(),
                slots: w.slots,
                slots_used: w.slots - free.get(&w.id).copied().unwrap_or(0),
                last_heartbeat_ms_ago: soft
                    .heartbeats
                    .get(&w.id)
                    .map_or(0, |t| now.duration_since(*t).as_millis() as u64),
            })
            .collect();
        Ok(Response::new(ListWorkersResponse {
            workers,
            leader: self.leader_id(),
        }))
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
                self.leader
                    .soft
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .heartbeats
                    .insert(id, Instant::now());
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
        let known = self.leader.raft.state().workers.contains_key(&r.worker_id);
        if known {
            let mut soft = self.leader.soft.lock().unwrap_or_else(|e| e.into_inner());
            soft.heartbeats.insert(r.worker_id, Instant::now());
            for a in r.attempts {
                soft.record_metrics(
                    &a.job_id,
                    a.attempt,
                    r.worker_id,
                    a.tasks,
                    CountersFrom::Heartbeat,
                );
            }
        }
        Ok(Response::new(HeartbeatResponse { known }))
    }

    async fn acknowledge_checkpoint(
        &self,
        request: Request<CheckpointAck>,
    ) -> Result<Response<Empty>, Status> {
        self.require_leader()?;
        let r = request.into_inner();
        let subtasks: Vec<ReportedSubtask> =
            decode_subtasks(&r.subtasks_json).map_err(Status::invalid_argument)?;
        let input = if r.finished {
            CoordinatorInput::Finished {
                task: r.task as usize,
                subtasks,
            }
        } else {
            CoordinatorInput::Ack {
                checkpoint: r.checkpoint,
                task: r.task as usize,
                subtasks,
            }
        };
        if let Err(e) = self.leader.acknowledge(&r.job_id, r.attempt, input) {
            tracing::warn!(job = %r.job_id, error = %e, "checkpoint failed");
            self.leader.attempt_failed(&r.job_id, r.attempt, e).await;
        }
        self.leader.dispatch_pending().await;
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
            .state()
            .workers
            .get(&r.worker_id)
            .map(|w| w.addr.clone())
            .unwrap_or_default();
        self.leader
            .soft
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_metrics(
                &r.job_id,
                r.attempt,
                r.worker_id,
                r.tasks,
                CountersFrom::End,
            );
        self.leader
            .attempt_ended(&r.job_id, r.attempt, addr, r.failed, r.error)
            .await;
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
    let store = crate::leader::open_store(dir)?;
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

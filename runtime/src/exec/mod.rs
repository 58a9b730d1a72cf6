//! The local executor: runs a [`JobGraph`] as tasks on threads, in this process.
//!
//! Planning: every node whose only input is a `Forward` edge from a node of equal parallelism is
//! *chained* into its upstream's task, so a source, its filters and projections run as function
//! calls on one thread with no copies. Every other edge becomes an exchange: each sending subtask
//! holds one bounded channel per receiving subtask and a partitioner (key group, round-robin,
//! broadcast, forward). Bounded channels give backpressure: a slow consumer blocks its producers,
//! all the way back to the sources.
//!
//! Each task subtask is one thread. Its loop takes the next element from whichever input channel
//! is ready, pushes batches through the chain, tracks the watermark of every input channel and
//! forwards the minimum (ignoring idle and ended channels), and at the end of all inputs fires a
//! final watermark of +infinity, so bounded jobs flush every window.

mod checkpointing;
mod host;
mod placement;

pub use host::{Progress, TaskHost, TaskRun};

pub use placement::{
    checkpoint_coordinator, task_layout, ChannelKey, CheckpointLink, CounterEntry, LiveStats,
    Network, Outlet, Placement, SubtaskCounters, TaskInfo,
};

use crate::checkpoint::{
    CheckpointError, CheckpointId, CheckpointStore, SnapshotPoint, SubtaskState,
};
use crate::element::Element;
use crate::error::{BuildError, FaultDomain};
use crate::expr::{self, Expr, Scope};
use crate::graph::{JobGraph, NodeId, NodeKind, Partitioning};
use crate::keygroup::{hash_key, key_group_of, subtask_of, KeyGroupRange};
use crate::operator::{Operator, Output, Source, SourcePoll};
use crate::types::{Row, Timestamp, Value, MAX_TIMESTAMP, MIN_TIMESTAMP};
use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError, TrySendError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a job could not be planned or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot build {node}: {source}")]
    Build {
        node: String,
        #[source]
        source: BuildError,
    },
    #[error("{task} failed: {source}")]
    Task {
        task: String,
        #[source]
        source: crate::operator::OperatorError,
    },
    #[error("{task} panicked: {message}")]
    Panic { task: String, message: String },
    #[error("{task} stopped because a task it exchanges data with failed")]
    Disconnected { task: String },
    #[error("the job was cancelled")]
    Cancelled,
    #[error("checkpointing failed: {0}")]
    Checkpoint(#[from] CheckpointError),
}

impl ExecError {
    /// Whose fault the failure is (see [`FaultDomain`]). A task that stopped because a peer
    /// failed is transient: the peer's own report says why.
    pub fn domain(&self) -> FaultDomain {
        match self {
            ExecError::Build { source, .. } => source.domain,
            ExecError::Task { source, .. } => source.domain(),
            ExecError::Panic { .. } => FaultDomain::Internal,
            ExecError::Disconnected { .. } | ExecError::Cancelled => FaultDomain::Transient,
            ExecError::Checkpoint(e) => e.domain(),
        }
    }

    fn build(node: &str, source: BuildError) -> ExecError {
        ExecError::Build {
            node: node.to_string(),
            source,
        }
    }
}

/// Creates the operator instances of a job. Implemented by `eddy-operators`; the executor only
/// decides where and when to call it.
pub trait TaskFactory: Sync {
    /// The source code of subtask `subtask` of source node `node`.
    fn source(
        &self,
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
    ) -> Result<Box<dyn Source>, BuildError>;
    /// The operator (or sink) instance of subtask `subtask` of `node`.
    fn operator(
        &self,
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
    ) -> Result<Box<dyn Operator>, BuildError>;

    /// The watermark subtask `subtask` of `node` resumes from after a restore: the restored
    /// task forwards it before anything else and its operators judge lateness against it, as
    /// the run before the restore did. `None`: a fresh start (the watermark starts at −∞).
    fn restored_watermark(
        &self,
        _graph: &JobGraph,
        _node: NodeId,
        _subtask: u32,
    ) -> Option<Timestamp> {
        None
    }

    /// A checkpoint that holds `state` for a subtask of sink `node` completed: make what it
    /// covers visible (publish staged files, commit a transaction). Called again for the same
    /// state after a restore, so it must be idempotent.
    fn commit(
        &self,
        _graph: &JobGraph,
        _node: NodeId,
        _state: &SubtaskState,
    ) -> Result<(), BuildError> {
        Ok(())
    }
}

/// Makes visible what a completed checkpoint covers: [`TaskFactory::commit`] for every sink
/// subtask state of `graph` it holds (matched by name), its operator state read from `store`
/// where the metadata refers to it. Run when a checkpoint completes, and again on restore,
/// since the previous run may have died between completing the checkpoint and committing it.
pub fn commit_checkpoint(
    factory: &dyn TaskFactory,
    graph: &JobGraph,
    metadata: &crate::checkpoint::CheckpointMetadata,
    store: &crate::checkpoint::CheckpointStore,
) -> Result<(), CheckpointError> {
    commit_checkpoint_where(factory, graph, metadata, store, &|_, _| true)
}

/// [`commit_checkpoint`] for the subtask states `mine(node, subtask)` selects: a cluster worker
/// commits what the subtasks it runs staged.
pub fn commit_checkpoint_where(
    factory: &dyn TaskFactory,
    graph: &JobGraph,
    metadata: &crate::checkpoint::CheckpointMetadata,
    store: &crate::checkpoint::CheckpointStore,
    mine: &dyn Fn(NodeId, u32) -> bool,
) -> Result<(), CheckpointError> {
    for op in &metadata.operators {
        let Some(node) = graph.nodes.iter().position(|n| n.name == op.name) else {
            continue;
        };
        if !matches!(graph.nodes[node].kind, NodeKind::Sink(_)) {
            continue;
        }
        for state in op.subtasks.iter().filter(|s| mine(node, s.subtask)) {
            let state = store.resolve_state(state)?;
            factory
                .commit(graph, node, &state)
                .map_err(|source| CheckpointError::Commit {
                    checkpoint: metadata.checkpoint,
                    node: op.name.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Checkpointing of a run.
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    /// Where checkpoints are written (and the restored one was read from, usually).
    pub store: CheckpointStore,
    /// Time between checkpoint triggers; a slow checkpoint delays the next rather than
    /// overlapping it.
    pub interval: Duration,
    /// Completed checkpoints to keep.
    pub retain: usize,
    /// The id of the first checkpoint of this run: above the checkpoint it restored from and
    /// every id the store reserved ([`CheckpointStore::next_id`]).
    pub first_id: CheckpointId,
    /// Checkpoint timeout and tolerated failures.
    pub limits: crate::checkpoint::coordinator::CheckpointLimits,
    /// Where a stop request ([`CancelHandle::request_stop`]) writes a savepoint before the job
    /// stops.
    pub savepoint_on_stop: Option<CheckpointStore>,
}

/// Tuning of the executor.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Rows per batch sent over an exchange.
    pub batch_size: usize,
    /// Batches buffered per channel before the sender blocks (backpressure).
    pub channel_capacity: usize,
    /// Periodic checkpoints driven from this process, if any.
    pub checkpointing: Option<CheckpointSettings>,
    /// Run only some task subtasks here (a cluster worker); `None`: the whole job.
    pub placement: Option<Placement>,
    /// Counters of every operator subtask, updated while the job runs.
    pub live: Option<Arc<LiveStats>>,
    /// Rows per second (wall clock) each source emits at most, over all its subtasks: replays
    /// recorded input at a live pace. `None`: as fast as the job can take it.
    pub max_source_rate: Option<u64>,
    /// Where tasks run: `None`, a thread each.
    pub host: Option<Arc<dyn TaskHost>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            batch_size: 1024,
            channel_capacity: 16,
            checkpointing: None,
            placement: None,
            live: None,
            max_source_rate: None,
            host: None,
        }
    }
}

/// A checkpoint or savepoint the run completed.
#[derive(Clone, Debug)]
pub struct CompletedCheckpoint {
    /// Its id, which a restart resumes from.
    pub id: CheckpointId,
    /// From trigger to published metadata.
    pub duration: Duration,
    pub savepoint: bool,
    /// The final checkpoint after the end of all input.
    pub finished: bool,
    /// Where it was written.
    pub location: String,
}

/// Counts of one node over all its subtasks, for the run summary and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub name: String,
    pub records_in: u64,
    pub records_out: u64,
}

/// What a finished job did.
#[derive(Clone, Debug, Default)]
pub struct JobStats {
    pub nodes: Vec<NodeStats>,
    pub elapsed: Duration,
    /// Checkpoints and savepoints completed, in order.
    pub checkpoints: Vec<CompletedCheckpoint>,
    /// The job was stopped on request ([`CancelHandle::request_stop`]) before its end.
    pub stopped: bool,
}

impl JobStats {
    /// The counts of the node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStats> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// A handle to stop a running job from another thread (e.g. on Ctrl-C).
#[derive(Clone, Debug, Default)]
pub struct CancelHandle {
    cancelled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl CancelHandle {
    /// Stops every task now.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether the job must stop now; tasks poll it between batches.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Stops the job gracefully: with checkpointing, after a savepoint (when one is
    /// configured); otherwise this is [`CancelHandle::cancel`].
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a graceful stop was asked for; the checkpoint driver polls it.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A task: the head node of a chain and the nodes chained behind it.
#[derive(Debug, Clone)]
struct TaskPlan {
    head: NodeId,
    /// Head first, then chained nodes in topological order.
    members: Vec<NodeId>,
}

/// Which nodes run together in one task.
fn plan_tasks(graph: &JobGraph) -> Vec<TaskPlan> {
    let mut task_of: HashMap<NodeId, usize> = HashMap::new();
    let mut tasks: Vec<TaskPlan> = Vec::new();
    for node in &graph.nodes {
        let chain_to = match node.inputs.as_slice() {
            [edge]
                if edge.partitioning == Partitioning::Forward
                    && graph.nodes[edge.from].parallelism == node.parallelism =>
            {
                task_of.get(&edge.from).copied()
            }
            _ => None,
        };
        match chain_to {
            Some(t) => {
                tasks[t].members.push(node.id);
                task_of.insert(node.id, t);
            }
            None => {
                task_of.insert(node.id, tasks.len());
                tasks.push(TaskPlan {
                    head: node.id,
                    members: vec![node.id],
                });
            }
        }
    }
    tasks
}

/// Where the rows of an output port go.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// A chained operator in the same task, at this input.
    Local { op: usize, input: usize },
    /// An exchange writer of the task.
    Exchange(usize),
}

/// Distributes rows over the subtasks of the receiving node.
enum Partitioner {
    Forward,
    Hash {
        keys: Vec<Expr>,
        max_parallelism: u32,
    },
    Rebalance {
        next: usize,
    },
    Broadcast,
}

/// The sending end of one channel: in process, or to another process.
enum Lane {
    Local(Sender<Element>),
    Remote(Box<dyn Outlet>),
}

/// Sends on a lane, blocking while it is full and counting that time as backpressure.
fn send_lane(
    lane: &Lane,
    element: Element,
    counters: Option<&SubtaskCounters>,
    task: &str,
) -> Result<(), ExecError> {
    let disconnected = || ExecError::Disconnected {
        task: task.to_string(),
    };
    match lane {
        Lane::Local(tx) => match tx.try_send(element) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(element)) => {
                let waited = Instant::now();
                let sent = tx.send(element).map_err(|_| disconnected());
                if let Some(c) = counters {
                    SubtaskCounters::add(&c.backpressured_ns, waited.elapsed().as_nanos() as u64);
                }
                sent
            }
            Err(TrySendError::Disconnected(_)) => Err(disconnected()),
        },
        Lane::Remote(outlet) => {
            let waited = Instant::now();
            let sent = outlet.send(element).map_err(|reason| {
                tracing::warn!(task, %reason, "remote channel failed");
                disconnected()
            });
            if let Some(c) = counters {
                SubtaskCounters::add(&c.backpressured_ns, waited.elapsed().as_nanos() as u64);
            }
            sent
        }
    }
}

/// The sending end of one exchange edge in one subtask.
struct ExchangeWriter {
    partitioner: Partitioner,
    senders: Vec<Lane>,
    buffers: Vec<Vec<Row>>,
    batch_size: usize,
    task: String,
    /// The writing operator's counters, charged with backpressure.
    counters: Option<Arc<SubtaskCounters>>,
}

impl ExchangeWriter {
    fn send(&self, target: usize, element: Element) -> Result<(), ExecError> {
        send_lane(
            &self.senders[target],
            element,
            self.counters.as_deref(),
            &self.task,
        )
    }

    fn write(&mut self, rows: Vec<Row>) -> Result<(), ExecError> {
        let targets = self.senders.len();
        match &mut self.partitioner {
            Partitioner::Forward => self.buffer_all(0, rows),
            Partitioner::Rebalance { next } => {
                let target = *next;
                *next = (*next + 1) % targets;
                self.buffer_all(target, rows)
            }
            Partitioner::Broadcast => {
                for target in 0..targets {
                    self.buffer_all(target, rows.clone())?;
                }
                Ok(())
            }
            Partitioner::Hash {
                keys,
                max_parallelism,
            } => {
                let mut key: Vec<Value> = Vec::with_capacity(keys.len());
                for row in rows {
                    key.clear();
                    key.extend(keys.iter().map(|k| k.eval(&row.values)));
                    let kg = key_group_of(hash_key(&key), *max_parallelism);
                    let target = subtask_of(kg, targets as u32, *max_parallelism) as usize;
                    self.buffers[target].push(row);
                    if self.buffers[target].len() >= self.batch_size {
                        let batch = std::mem::take(&mut self.buffers[target]);
                        send_lane(
                            &self.senders[target],
                            Element::Batch(batch),
                            self.counters.as_deref(),
                            &self.task,
                        )?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Appends a batch to a target's buffer and sends full batches.
    fn buffer_all(&mut self, target: usize, mut rows: Vec<Row>) -> Result<(), ExecError> {
        let buffer = &mut self.buffers[target];
        if buffer.is_empty() && rows.len() >= self.batch_size / 2 {
            return self.send(target, Element::Batch(rows));
        }
        buffer.append(&mut rows);
        if buffer.len() >= self.batch_size {
            let batch = std::mem::take(buffer);
            self.send(target, Element::Batch(batch))?;
        }
        Ok(())
    }

    /// Sends every partly filled buffer.
    fn flush(&mut self) -> Result<(), ExecError> {
        for target in 0..self.buffers.len() {
            if !self.buffers[target].is_empty() {
                let batch = std::mem::take(&mut self.buffers[target]);
                self.send(target, Element::Batch(batch))?;
            }
        }
        Ok(())
    }

    /// Flushes, then sends a control element to every receiving subtask.
    fn broadcast(&mut self, element: Element) -> Result<(), ExecError> {
        self.flush()?;
        for target in 0..self.senders.len() {
            self.send(target, element.clone())?;
        }
        Ok(())
    }
}

/// One operator of a chain, with its output buffer and routing.
struct ChainOp {
    node: NodeId,
    /// The key groups this subtask of the node owns.
    key_groups: KeyGroupRange,
    name: String,
    op: Box<dyn Operator>,
    out: Output,
    records_in: u64,
    records_out: u64,
    /// Live copies of the counts, when the run publishes them.
    counters: Option<Arc<SubtaskCounters>>,
}

/// The operators of one task subtask and the exchanges they feed.
struct Chain {
    ops: Vec<ChainOp>,
    /// `routes[op][port]`: where that port's rows go.
    routes: Vec<Vec<Vec<Target>>>,
    exchanges: Vec<ExchangeWriter>,
    name: String,
    /// A watermark the operators fired on that has not been sent downstream yet.
    unforwarded: Option<Timestamp>,
    /// The newest watermark the operators fired on: checkpointed with their state.
    seen: Timestamp,
}

impl Chain {
    fn task_error(&self, op: usize, source: crate::operator::OperatorError) -> ExecError {
        ExecError::Task {
            task: format!("{} at {}", self.name, self.ops[op].name),
            source,
        }
    }

    /// Runs a batch through operator `op` and everything downstream of it in the chain.
    fn push(&mut self, op: usize, input: usize, rows: Vec<Row>) -> Result<(), ExecError> {
        let mut out = std::mem::take(&mut self.ops[op].out);
        let n = rows.len() as u64;
        self.ops[op].records_in += n;
        let started = self.ops[op].counters.is_some().then(Instant::now);
        if let Err(e) = self.ops[op].op.process(input, rows, &mut out) {
            return Err(self.task_error(op, e));
        }
        if let (Some(c), Some(t)) = (&self.ops[op].counters, started) {
            SubtaskCounters::add(&c.records_in, n);
            SubtaskCounters::add(&c.busy_ns, t.elapsed().as_nanos() as u64);
        }
        self.route(op, &mut out)?;
        self.ops[op].out = out;
        Ok(())
    }

    /// Sends what an operator emitted to its targets.
    fn route(&mut self, op: usize, out: &mut Output) -> Result<(), ExecError> {
        self.ops[op].records_out += out.len() as u64;
        if let Some(c) = &self.ops[op].counters {
            SubtaskCounters::add(&c.records_out, out.len() as u64);
        }
        self.route_ports(op, out)
    }

    fn route_ports(&mut self, op: usize, out: &mut Output) -> Result<(), ExecError> {
        for port in 0..out.port_count() {
            if out.rows(port).is_empty() {
                continue;
            }
            let rows = out.take(port);
            let n = self.routes[op][port].len();
            let mut rows = Some(rows);
            for t in 0..n {
                let target = self.routes[op][port][t];
                let batch = if t + 1 == n {
                    rows.take().unwrap_or_default()
                } else {
                    rows.as_ref().cloned().unwrap_or_default()
                };
                match target {
                    Target::Local { op: next, input } => self.push(next, input, batch)?,
                    Target::Exchange(e) => self.exchanges[e].write(batch)?,
                }
            }
        }
        Ok(())
    }

    /// Event time advanced for the whole task: every operator fires, in chain order, and the
    /// watermark goes downstream.
    fn watermark(&mut self, watermark: Timestamp) -> Result<(), ExecError> {
        self.fire(watermark)?;
        self.forward_watermark()
    }

    /// Sends the last watermark the operators fired on downstream, if not sent yet. Sending it
    /// later than the operators saw it is always safe (it only holds receivers back a little).
    fn forward_watermark(&mut self) -> Result<(), ExecError> {
        if let Some(watermark) = self.unforwarded.take() {
            for exchange in &mut self.exchanges {
                exchange.broadcast(Element::Watermark(watermark))?;
            }
        }
        Ok(())
    }

    /// Every operator fires what the watermark makes due, in chain order; the watermark is
    /// forwarded later by [`Chain::forward_watermark`].
    fn fire(&mut self, watermark: Timestamp) -> Result<(), ExecError> {
        for op in 0..self.ops.len() {
            let mut out = std::mem::take(&mut self.ops[op].out);
            if let Err(e) = self.ops[op].op.on_watermark(watermark, &mut out) {
                return Err(self.task_error(op, e));
            }
            self.route(op, &mut out)?;
            self.ops[op].out = out;
        }
        self.unforwarded = Some(watermark);
        self.seen = self.seen.max(watermark);
        Ok(())
    }

    /// All inputs ended: final watermark, then every operator closes in chain order.
    fn end(&mut self) -> Result<(), ExecError> {
        self.watermark(MAX_TIMESTAMP)?;
        for op in 0..self.ops.len() {
            let mut out = std::mem::take(&mut self.ops[op].out);
            if let Err(e) = self.ops[op].op.on_end(&mut out) {
                return Err(self.task_error(op, e));
            }
            self.route(op, &mut out)?;
            self.ops[op].out = out;
        }
        for exchange in &mut self.exchanges {
            exchange.broadcast(Element::End)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExecError> {
        for exchange in &mut self.exchanges {
            exchange.flush()?;
        }
        Ok(())
    }

    fn idle(&mut self) -> Result<(), ExecError> {
        self.forward_watermark()?;
        for exchange in &mut self.exchanges {
            exchange.broadcast(Element::Idle)?;
        }
        Ok(())
    }

    /// The synchronous part of the snapshot of every operator, in chain order.
    fn snapshot(
        &mut self,
        point: SnapshotPoint,
        subtask: u32,
    ) -> Result<Vec<checkpointing::PendingSubtask>, ExecError> {
        let mut pending = Vec::with_capacity(self.ops.len());
        for op in 0..self.ops.len() {
            let snapshot = self.ops[op]
                .op
                .snapshot(point)
                .map_err(|e| self.task_error(op, e))?;
            pending.push(checkpointing::PendingSubtask {
                node: self.ops[op].node,
                state: SubtaskState {
                    subtask,
                    key_groups: self.ops[op].key_groups,
                    finished: point == SnapshotPoint::EndOfInput,
                    state: snapshot.state,
                    keyed: None,
                    watermark: (self.seen != MIN_TIMESTAMP).then_some(self.seen),
                },
                keyed: snapshot.keyed,
            });
        }
        Ok(pending)
    }

    /// Sends a checkpoint barrier downstream, after everything emitted before it.
    fn barrier(&mut self, checkpoint: CheckpointId) -> Result<(), ExecError> {
        self.forward_watermark()?;
        for exchange in &mut self.exchanges {
            exchange.broadcast(Element::Barrier(checkpoint))?;
        }
        Ok(())
    }
}

/// The state of one input channel, for watermark tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelStatus {
    Active,
    Idle,
    Ended,
}

/// The receiving side of a task whose head has inputs.
struct Inputs {
    receivers: Vec<Receiver<Element>>,
    /// The head operator's input index of each channel.
    input_of: Vec<usize>,
    watermarks: Vec<Timestamp>,
    status: Vec<ChannelStatus>,
    current: Timestamp,
    /// Where the next scan for a ready channel starts (round-robin fairness).
    next: usize,
    /// Elements handled since the last watermark was forwarded.
    since_watermark: u32,
    /// Barrier alignment: channels that delivered the barrier being aligned are not read
    /// until every other channel has delivered it too.
    alignment: Alignment,
    /// Channels of streams with event time that have not yet said where their event time is
    /// (a watermark, idleness, their end or a barrier). At the start, while any has not, the
    /// channels that have are not read: otherwise an input whose task started first runs far
    /// ahead while the combined watermark is still at its minimum, and what counts as late
    /// downstream would depend on which thread the scheduler ran first.
    first_pending: Vec<bool>,
    /// Since when the task has held channels back for `first_pending`.
    started: Instant,
}

/// Aligned checkpoint barriers at a task with several input channels.
///
/// Checkpoint `n` is taken when every channel not ended has delivered barrier `n`; channels
/// that delivered it wait meanwhile, so the snapshot holds exactly what came before it. A
/// checkpoint the coordinator abandoned (it timed out, a trigger or a task was lost) may have
/// barriers left in some channels only: a barrier newer than the one being aligned abandons the
/// older alignment, and barriers of a checkpoint older than the last one seen are dropped, so a
/// lost barrier never blocks a channel for good (as in Flink, where a newer checkpoint subsumes
/// an older one).
#[derive(Debug)]
struct Alignment {
    blocked: Vec<bool>,
    /// The checkpoint whose barriers are being aligned.
    aligning: Option<CheckpointId>,
    /// The newest checkpoint seen (aligned or abandoned): its barriers and older ones that
    /// arrive later are stale.
    newest: CheckpointId,
}

impl Alignment {
    fn new(channels: usize) -> Alignment {
        Alignment {
            blocked: vec![false; channels],
            aligning: None,
            newest: 0,
        }
    }

    fn blocked(&self, channel: usize) -> bool {
        self.blocked[channel]
    }

    /// Barrier `id` arrived on `channel`. Returns the checkpoint whose alignment it abandoned.
    fn on_barrier(&mut self, channel: usize, id: CheckpointId) -> Option<CheckpointId> {
        let mut abandoned = None;
        match self.aligning {
            Some(current) if id == current => {}
            Some(current) if id > current => {
                self.blocked.iter_mut().for_each(|b| *b = false);
                self.aligning = Some(id);
                abandoned = Some(current);
            }
            Some(_) => return None,
            None if id <= self.newest => return None,
            None => self.aligning = Some(id),
        }
        self.newest = self.newest.max(id);
        self.blocked[channel] = true;
        abandoned
    }

    /// The checkpoint now aligned, if every channel not ended delivered its barrier; the
    /// channels are then read again.
    fn complete(&mut self, status: &[ChannelStatus]) -> Option<CheckpointId> {
        let id = self.aligning?;
        let aligned = self
            .blocked
            .iter()
            .zip(status)
            .all(|(blocked, s)| *blocked || *s == ChannelStatus::Ended);
        if !aligned {
            return None;
        }
        self.aligning = None;
        self.blocked.iter_mut().for_each(|b| *b = false);
        Some(id)
    }
}

/// How long a task holds inputs back waiting for every input's first watermark; after this a
/// silent input (an empty topic without an idle timeout) no longer stops the others.
const FIRST_WATERMARK_WAIT: Duration = Duration::from_secs(30);

/// Whether the stream out of `node` carries watermarks: some source upstream of it has a
/// watermark spec.
fn carries_watermarks(graph: &JobGraph, node: NodeId) -> bool {
    match &graph.nodes[node].kind {
        NodeKind::Source(spec) => spec.watermark.is_some(),
        _ => graph.nodes[node]
            .inputs
            .iter()
            .any(|e| carries_watermarks(graph, e.from)),
    }
}

impl Inputs {
    /// The combined watermark: the minimum over active channels; when every live channel is
    /// idle, the maximum over them (as Flink's watermark valve does: an idle channel promises
    /// nothing new below its last watermark); +infinity once all ended.
    fn combined(&self) -> Timestamp {
        let live = || {
            self.watermarks
                .iter()
                .zip(&self.status)
                .filter(|(_, s)| **s != ChannelStatus::Ended)
        };
        let active = live().filter(|(_, s)| **s == ChannelStatus::Active);
        if let Some(min) = active.map(|(w, _)| *w).min() {
            return min;
        }
        live().map(|(w, _)| *w).max().unwrap_or(MAX_TIMESTAMP)
    }

    fn has_pending(&self) -> bool {
        self.receivers
            .iter()
            .zip(&self.status)
            .zip(&self.alignment.blocked)
            .any(|((r, s), b)| *s != ChannelStatus::Ended && !b && !r.is_empty())
    }
}

/// A source sends its watermark after this many polls (and whenever it idles or ends): often
/// enough for timely windows, rarely enough that exchange batches stay full.
const WATERMARK_EVERY_POLLS: u32 = 8;

/// A source also sends its watermark after a poll that moved it this far in event time (ms),
/// so that a sparse stream (a few orders among many clicks: 1024 rows can be minutes) does not
/// leave downstream windows minutes behind, judging late rows against a stale watermark.
const WATERMARK_EVERY_EVENT_TIME: i64 = 5_000;

/// An input task forwards its watermark downstream after this many elements even while more
/// input is queued (otherwise as soon as its inputs are drained).
const WATERMARK_EVERY_ELEMENTS: u32 = 16;

/// Watermark generation of a source subtask.
struct SourceWatermarks {
    /// Per port: the time column, if the port carries event time.
    columns: Vec<Option<usize>>,
    delay: i64,
    idle_timeout: Option<Duration>,
    max_seen: Timestamp,
    emitted: Timestamp,
}

impl SourceWatermarks {
    /// Looks at the rows a poll produced.
    fn observe(&mut self, out: &Output) {
        for (port, column) in self.columns.iter().enumerate() {
            if let Some(c) = column {
                for row in out.rows(port) {
                    if let Some(t) = row.values[*c].as_timestamp() {
                        self.max_seen = self.max_seen.max(t);
                    }
                }
            }
        }
    }

    /// `wm` if it is ahead of the last watermark emitted (a source's own watermark).
    fn advance_to(&mut self, wm: Timestamp) -> Option<Timestamp> {
        (wm > self.emitted).then(|| {
            self.emitted = wm;
            wm
        })
    }
}

/// What starts a task: a source it polls, or input channels it reads.
enum Head {
    Source {
        source: Box<dyn Source>,
        out: Output,
        routes: Vec<Vec<Target>>,
        watermarks: Option<SourceWatermarks>,
        pace: Option<Pace>,
        /// Since when the source has had nothing to emit, and whether it told downstream.
        idle_since: Option<Instant>,
        marked_idle: bool,
        /// Polls since the last watermark.
        polls: u32,
    },
    Inputs(Inputs),
}

/// Holds a source subtask to a rate of the whole input in wall-clock time.
struct Pace {
    /// Records of the whole input per second (every subtask reads at this rate).
    rows_per_second: f64,
    started: Instant,
    /// Subtasks of the source.
    subtasks: u32,
    /// The input position at the first look: a restored source goes on from there, not from 0.
    origin: Option<u64>,
}

impl Pace {
    fn new(rows_per_second: u64, subtasks: u32) -> Self {
        Pace {
            rows_per_second: rows_per_second.max(1) as f64,
            started: Instant::now(),
            subtasks,
            origin: None,
        }
    }

    /// How long to wait before reading more, at `position` in the input; `None`: go on.
    fn wait(&mut self, position: u64) -> Option<Duration> {
        let origin = *self.origin.get_or_insert(position);
        let rows = position.saturating_sub(origin);
        let due = Duration::from_secs_f64(rows as f64 / self.rows_per_second);
        due.checked_sub(self.started.elapsed())
            .filter(|d| !d.is_zero())
    }
}

/// One task subtask, ready for its host (a thread or an actor) to step.
struct Task {
    name: String,
    /// Index of the task subtask in the job, for checkpoint reports.
    index: usize,
    subtask: u32,
    head_node: NodeId,
    /// The key groups of the head node's subtask (a source's share of the input splits).
    head_key_groups: KeyGroupRange,
    checkpointing: Option<checkpointing::TaskCheckpointing>,
    /// Records a source head emitted.
    source_records: u64,
    /// Live copy of `source_records`.
    source_counters: Option<Arc<SubtaskCounters>>,
    head: Head,
    chain: Chain,
    cancel: CancelHandle,
    /// The watermark a restored task resumes from, applied at its first step.
    resume_watermark: Option<Timestamp>,
}

impl Task {
    /// Runs at most `budget` rounds (a poll of the source, or one element of an input);
    /// true when the task has finished.
    fn step(&mut self, budget: u32) -> Result<bool, ExecError> {
        if let Some(watermark) = self.resume_watermark.take() {
            self.resume(watermark)?;
        }
        match &mut self.head {
            Head::Source { .. } => self.source_step(budget),
            Head::Inputs(_) => self.inputs_step(budget),
        }
    }

    /// A restored task starts where its watermark was at the checkpoint: its operators see it
    /// (nothing fires that had not fired before), it goes downstream before any row, and later
    /// watermarks only count once they pass it.
    fn resume(&mut self, watermark: Timestamp) -> Result<(), ExecError> {
        match &mut self.head {
            Head::Source { watermarks, .. } => match watermarks {
                Some(w) => {
                    w.emitted = w.emitted.max(watermark);
                    w.max_seen = w.max_seen.max(watermark.saturating_add(w.delay));
                }
                None => return Ok(()),
            },
            Head::Inputs(inputs) => inputs.current = inputs.current.max(watermark),
        }
        self.chain.watermark(watermark)
    }

    /// Records in and out per node of the task, once it finished.
    fn counts(&self) -> Vec<(NodeId, u64, u64)> {
        let mut counts: Vec<(NodeId, u64, u64)> = self
            .chain
            .ops
            .iter()
            .map(|op| (op.node, op.records_in, op.records_out))
            .collect();
        if matches!(self.head, Head::Source { .. }) {
            counts.push((self.head_node, 0, self.source_records));
        }
        counts
    }

    fn source_step(&mut self, budget: u32) -> Result<bool, ExecError> {
        let Head::Source {
            source,
            out,
            routes,
            watermarks,
            pace,
            idle_since,
            marked_idle,
            polls,
        } = &mut self.head
        else {
            return Ok(true);
        };
        let chain = &mut self.chain;
        let snapshot_source = |source: &mut Box<dyn Source>, chain: &mut Chain, point| {
            let position = source.snapshot().map_err(|e| ExecError::Task {
                task: self.name.clone(),
                source: e,
            })?;
            let mut pending = vec![checkpointing::PendingSubtask {
                node: self.head_node,
                state: SubtaskState {
                    subtask: self.subtask,
                    key_groups: self.head_key_groups,
                    finished: point == SnapshotPoint::EndOfInput,
                    state: position,
                    keyed: None,
                    watermark: (chain.seen != MIN_TIMESTAMP).then_some(chain.seen),
                },
                keyed: None,
            }];
            pending.extend(chain.snapshot(point, self.subtask)?);
            Ok::<_, ExecError>(pending)
        };
        for _ in 0..budget {
            if self.cancel.is_cancelled() {
                return Err(ExecError::Cancelled);
            }
            if let Some(ckpt) = &self.checkpointing {
                while let Some(id) = ckpt.next_trigger() {
                    let point = SnapshotPoint::Barrier(id);
                    let pending = snapshot_source(source, chain, point)?;
                    ckpt.report(self.index, point, pending)?;
                    chain.barrier(id)?;
                }
            }
            let wait = pace.as_mut().and_then(|p| {
                // Without a position in the input, the rows this subtask emitted stand for its
                // share of it.
                let position = source
                    .input_position()
                    .unwrap_or(self.source_records * u64::from(p.subtasks));
                p.wait(position)
            });
            if let Some(wait) = wait {
                // Ahead of the pace: let what was emitted go, then look at triggers again soon.
                chain.flush()?;
                std::thread::sleep(wait.min(Duration::from_millis(5)));
                continue;
            }
            // A restored source with its own watermark resumes it before emitting anything,
            // so that what was late before the restore is late after it.
            if let Some(w) = watermarks.as_mut().filter(|w| w.emitted == MIN_TIMESTAMP) {
                if let Some(wm) = source.watermark().and_then(|wm| w.advance_to(wm)) {
                    chain.watermark(wm)?;
                }
            }
            let poll = source.poll(out).map_err(|e| ExecError::Task {
                task: self.name.clone(),
                source: e,
            })?;
            let produced = !out.is_empty();
            *polls += 1;
            let new_watermark = watermarks.as_mut().and_then(|w| {
                let candidate = if source.tracks_watermark() {
                    source.watermark().unwrap_or(MIN_TIMESTAMP)
                } else {
                    w.observe(out);
                    if w.max_seen == MIN_TIMESTAMP {
                        MIN_TIMESTAMP
                    } else {
                        w.max_seen.saturating_sub(w.delay)
                    }
                };
                let due = *polls >= WATERMARK_EVERY_POLLS
                    || poll != SourcePoll::Ready
                    || (w.emitted == MIN_TIMESTAMP && candidate != MIN_TIMESTAMP)
                    || candidate.saturating_sub(w.emitted) >= WATERMARK_EVERY_EVENT_TIME;
                due.then(|| w.advance_to(candidate)).flatten()
            });
            if new_watermark.is_some() {
                *polls = 0;
            }
            if produced {
                self.source_records += out.len() as u64;
                if let Some(c) = &self.source_counters {
                    SubtaskCounters::add(&c.records_out, out.len() as u64);
                }
                *idle_since = None;
                *marked_idle = false;
                route_source(chain, routes, out)?;
            }
            if let Some(wm) = new_watermark {
                chain.watermark(wm)?;
            }
            match poll {
                SourcePoll::Ready => {}
                SourcePoll::Idle => {
                    chain.flush()?;
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    let timeout = watermarks.as_ref().and_then(|w| w.idle_timeout);
                    if let Some(timeout) = timeout {
                        if !*marked_idle && since.elapsed() >= timeout {
                            chain.idle()?;
                            *marked_idle = true;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                SourcePoll::Finished => {
                    source.close().map_err(|e| ExecError::Task {
                        task: self.name.clone(),
                        source: e,
                    })?;
                    chain.end()?;
                    if let Some(ckpt) = &self.checkpointing {
                        let point = SnapshotPoint::EndOfInput;
                        let pending = snapshot_source(source, chain, point)?;
                        ckpt.report(self.index, point, pending)?;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn inputs_step(&mut self, budget: u32) -> Result<bool, ExecError> {
        let Head::Inputs(inputs) = &mut self.head else {
            return Ok(true);
        };
        let chain = &mut self.chain;
        for _ in 0..budget {
            if self.cancel.is_cancelled() {
                return Err(ExecError::Cancelled);
            }
            if inputs.status.iter().all(|s| *s == ChannelStatus::Ended) {
                chain.end()?;
                if let Some(ckpt) = &self.checkpointing {
                    let point = SnapshotPoint::EndOfInput;
                    let pending = chain.snapshot(point, self.subtask)?;
                    ckpt.report(self.index, point, pending)?;
                }
                return Ok(true);
            }
            // Channels that delivered the barrier being aligned wait until all others have;
            // at the start, channels that gave their first watermark wait for the others.
            let mut holding = inputs.first_pending.iter().any(|&p| p);
            if holding && inputs.started.elapsed() > FIRST_WATERMARK_WAIT {
                tracing::warn!(
                    task = %self.name,
                    "an input gave no watermark within {} s; reading the others without it",
                    FIRST_WATERMARK_WAIT.as_secs()
                );
                inputs.first_pending.iter_mut().for_each(|p| *p = false);
                holding = false;
            }
            let alive: Vec<usize> = (0..inputs.receivers.len())
                .filter(|&i| {
                    inputs.status[i] != ChannelStatus::Ended && !inputs.alignment.blocked(i)
                })
                .filter(|&i| !holding || inputs.first_pending[i])
                .collect();
            // Take a channel with data ready, starting after the last one served so that every
            // channel gets its turn; block only when none has any.
            let mut ready = None;
            for offset in 0..alive.len() {
                let i = alive[(inputs.next + offset) % alive.len()];
                match inputs.receivers[i].try_recv() {
                    Ok(element) => {
                        inputs.next = (inputs.next + offset + 1) % alive.len();
                        ready = Some((i, element));
                        break;
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => {
                        return Err(ExecError::Disconnected {
                            task: self.name.clone(),
                        })
                    }
                }
            }
            let (channel, element) = match ready {
                Some(r) => r,
                None => {
                    chain.flush()?;
                    let mut select = Select::new();
                    for &i in &alive {
                        select.recv(&inputs.receivers[i]);
                    }
                    let Ok(op) = select.select_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let channel = alive[op.index()];
                    match op.recv(&inputs.receivers[channel]) {
                        Ok(element) => (channel, element),
                        Err(_) => {
                            return Err(ExecError::Disconnected {
                                task: self.name.clone(),
                            })
                        }
                    }
                }
            };
            let mut status_changed = false;
            if !matches!(element, Element::Batch(_)) {
                inputs.first_pending[channel] = false;
            }
            match element {
                Element::Batch(rows) => {
                    inputs.status[channel] = ChannelStatus::Active;
                    chain.push(0, inputs.input_of[channel], rows)?;
                }
                Element::Watermark(wm) => {
                    inputs.status[channel] = ChannelStatus::Active;
                    inputs.watermarks[channel] = inputs.watermarks[channel].max(wm);
                }
                Element::Idle => {
                    inputs.status[channel] = ChannelStatus::Idle;
                    status_changed = true;
                }
                Element::End => {
                    inputs.status[channel] = ChannelStatus::Ended;
                    status_changed = true;
                }
                Element::Barrier(id) => {
                    if let Some(dropped) = inputs.alignment.on_barrier(channel, id) {
                        tracing::debug!(
                            task = %self.name,
                            checkpoint = dropped,
                            newer = id,
                            "a newer barrier arrived: checkpoint {dropped} was abandoned"
                        );
                    }
                }
            }
            // Aligned when every channel not ended has delivered the barrier: snapshot, pass
            // the barrier on, and read all channels again.
            if let Some(id) = inputs.alignment.complete(&inputs.status) {
                let point = SnapshotPoint::Barrier(id);
                let pending = chain.snapshot(point, self.subtask)?;
                if let Some(ckpt) = &self.checkpointing {
                    ckpt.report(self.index, point, pending)?;
                }
                chain.barrier(id)?;
            }
            // The operators see a new watermark at once, in channel order (deterministic); it
            // is forwarded downstream less often, so that exchange batches stay full.
            let wm = inputs.combined();
            if wm > inputs.current && wm != MAX_TIMESTAMP {
                let first = inputs.current == MIN_TIMESTAMP;
                inputs.current = wm;
                chain.fire(wm)?;
                // The first watermark goes downstream at once: rows this task emits from now
                // on are judged downstream against it, not against no watermark at all.
                if first {
                    chain.forward_watermark()?;
                }
            }
            inputs.since_watermark += 1;
            let pending = inputs.has_pending();
            if !pending || status_changed || inputs.since_watermark >= WATERMARK_EVERY_ELEMENTS {
                inputs.since_watermark = 0;
                chain.forward_watermark()?;
            }
            // When every live input is idle, so is this task's output (after the watermark that
            // idleness allowed, as Flink's valve does).
            let live = inputs.status.iter().filter(|s| **s != ChannelStatus::Ended);
            let all_idle = status_changed
                && live.clone().count() > 0
                && live.into_iter().all(|s| *s == ChannelStatus::Idle);
            if all_idle {
                chain.idle()?;
            }
            if !pending {
                chain.flush()?;
            }
        }
        Ok(false)
    }
}

fn route_source(
    chain: &mut Chain,
    routes: &[Vec<Target>],
    out: &mut Output,
) -> Result<(), ExecError> {
    for (port, targets) in routes.iter().enumerate() {
        let rows = out.take(port);
        if rows.is_empty() {
            continue;
        }
        let mut rows = Some(rows);
        for (t, target) in targets.iter().enumerate() {
            let batch = if t + 1 == targets.len() {
                rows.take().unwrap_or_default()
            } else {
                rows.as_ref().cloned().unwrap_or_default()
            };
            match *target {
                Target::Local { op, input } => chain.push(op, input, batch)?,
                Target::Exchange(e) => chain.exchanges[e].write(batch)?,
            }
        }
    }
    Ok(())
}

/// Key expressions of a hash edge, compiled against the sender's schema.
fn compile_keys(
    graph: &JobGraph,
    from: NodeId,
    port: usize,
    keys: &[String],
) -> Result<Vec<Expr>, ExecError> {
    let schema = &graph.nodes[from].outputs[port].schema;
    keys.iter()
        .map(|k| {
            expr::parse_expr(k)
                .and_then(|ast| expr::compile(&ast, &Scope::single(schema)))
                .map_err(|e| {
                    ExecError::build(
                        &graph.nodes[from].name,
                        BuildError::new(format!("key `{k}`: {e}")),
                    )
                })
        })
        .collect()
}

/// Runs a job to completion on local threads. Returns per-node record counts.
pub fn execute(
    graph: &JobGraph,
    factory: &dyn TaskFactory,
    options: &ExecOptions,
    cancel: &CancelHandle,
) -> Result<JobStats, ExecError> {
    let started = Instant::now();
    let plans = plan_tasks(graph);
    let mut task_of = vec![0usize; graph.nodes.len()];
    let mut position = vec![0usize; graph.nodes.len()];
    for (t, plan) in plans.iter().enumerate() {
        for (i, &n) in plan.members.iter().enumerate() {
            task_of[n] = t;
            position[n] = i;
        }
    }

    // Global task indices (as `task_layout` numbers them) and which of them run here.
    let mut first_index = vec![0usize; plans.len()];
    let mut next_index = 0;
    for (t, plan) in plans.iter().enumerate() {
        first_index[t] = next_index;
        next_index += graph.nodes[plan.head].parallelism as usize;
    }
    let placement = options.placement.as_ref();
    let is_local = |task: usize, subtask: u32| {
        placement.is_none_or(|p| p.local.contains(&(first_index[task] + subtask as usize)))
    };

    // Channels of every exchange edge: senders[(node, input)][sender][receiver] and
    // receivers[(node, input)][receiver][sender], for the subtasks that run here.
    let mut senders: HashMap<(NodeId, usize), Vec<Vec<Lane>>> = HashMap::new();
    let mut receivers: HashMap<(NodeId, usize), Vec<Vec<Receiver<Element>>>> = HashMap::new();
    for node in &graph.nodes {
        let chained = plans[task_of[node.id]].head != node.id;
        if chained {
            continue;
        }
        for (input, edge) in node.inputs.iter().enumerate() {
            let from_p = graph.nodes[edge.from].parallelism as usize;
            let to_p = node.parallelism as usize;
            let forward = edge.partitioning == Partitioning::Forward && from_p == to_p;
            let mut s: Vec<Vec<Lane>> = (0..from_p).map(|_| Vec::new()).collect();
            let mut r: Vec<Vec<Receiver<Element>>> = vec![Vec::new(); to_p];
            for (i, senders_of_i) in s.iter_mut().enumerate() {
                for (j, receivers_of_j) in r.iter_mut().enumerate() {
                    if forward && i != j {
                        continue;
                    }
                    let sends_here = is_local(task_of[edge.from], i as u32);
                    let receives_here = is_local(task_of[node.id], j as u32);
                    let key = ChannelKey {
                        node: node.id,
                        input,
                        from: i as u32,
                        to: j as u32,
                    };
                    // A channel that cannot be set up: the network's fault.
                    let build = |message: String| {
                        ExecError::build(&node.name, BuildError::transient(message))
                    };
                    match (sends_here, receives_here, placement) {
                        (true, true, _) | (_, _, None) => {
                            let (tx, rx) = bounded(options.channel_capacity);
                            senders_of_i.push(Lane::Local(tx));
                            receivers_of_j.push(rx);
                        }
                        (true, false, Some(p)) => {
                            senders_of_i.push(Lane::Remote(p.network.outlet(key).map_err(build)?));
                        }
                        (false, true, Some(p)) => {
                            let (tx, rx) = bounded(options.channel_capacity);
                            p.network.inlet(key, tx).map_err(build)?;
                            receivers_of_j.push(rx);
                        }
                        (false, false, Some(_)) => {}
                    }
                }
            }
            senders.insert((node.id, input), s);
            receivers.insert((node.id, input), r);
        }
    }

    let remote_checkpoints = placement.and_then(|p| p.checkpoints.clone());
    let mut checkpoints = (options.checkpointing.is_some() || remote_checkpoints.is_some())
        .then(|| checkpointing::Wiring::new(next_index));
    let live = options.live.as_deref();
    let mut tasks: Vec<Task> = Vec::new();
    for (t, plan) in plans.iter().enumerate() {
        let head = &graph.nodes[plan.head];
        for subtask in 0..head.parallelism {
            if !is_local(t, subtask) {
                continue;
            }
            let index = first_index[t] + subtask as usize;
            let name = format!("{}[{}/{}]", head.name, subtask + 1, head.parallelism);
            let mut ops = Vec::new();
            let mut routes = Vec::new();
            let mut exchanges = Vec::new();
            let mut source_routes = Vec::new();
            let mut source_counters = None;
            // Operators (all members, or all but a source head).
            for &member in &plan.members {
                let node = &graph.nodes[member];
                let counters = live.map(|l| l.register(&node.name, subtask, index));
                let first_exchange = exchanges.len();
                let targets = port_targets(
                    graph,
                    member,
                    subtask,
                    &task_of,
                    &position,
                    plan,
                    &mut senders,
                    &mut exchanges,
                    options,
                    &name,
                )?;
                for exchange in &mut exchanges[first_exchange..] {
                    exchange.counters.clone_from(&counters);
                }
                if matches!(node.kind, NodeKind::Source(_)) {
                    source_routes = targets;
                    source_counters = counters;
                    continue;
                }
                let op = factory
                    .operator(graph, member, subtask)
                    .map_err(|e| ExecError::build(&node.name, e))?;
                ops.push(ChainOp {
                    node: member,
                    key_groups: KeyGroupRange::of_subtask(
                        subtask,
                        node.parallelism,
                        graph.max_parallelism,
                    ),
                    name: node.name.clone(),
                    op,
                    out: Output::new(node.outputs.len()),
                    records_in: 0,
                    records_out: 0,
                    counters,
                });
                routes.push(targets);
            }
            // With a source head, chain positions shift by one: the source is not an op.
            let shift = usize::from(matches!(head.kind, NodeKind::Source(_)));
            if shift == 1 {
                for r in routes.iter_mut().chain(std::iter::once(&mut source_routes)) {
                    for port in r.iter_mut() {
                        for t in port.iter_mut() {
                            if let Target::Local { op, .. } = t {
                                *op -= 1;
                            }
                        }
                    }
                }
            }
            let chain = Chain {
                ops,
                routes,
                exchanges,
                name: name.clone(),
                unforwarded: None,
                seen: MIN_TIMESTAMP,
            };
            let head_state = match &head.kind {
                NodeKind::Source(spec) => {
                    let source = factory
                        .source(graph, head.id, subtask)
                        .map_err(|e| ExecError::build(&head.name, e))?;
                    let watermarks = spec.watermark.as_ref().map(|w| SourceWatermarks {
                        columns: head
                            .outputs
                            .iter()
                            .map(|p| p.schema.index_of(&w.column))
                            .collect(),
                        delay: w.delay,
                        idle_timeout: w.idle_timeout.map(|ms| Duration::from_millis(ms as u64)),
                        max_seen: MIN_TIMESTAMP,
                        emitted: MIN_TIMESTAMP,
                    });
                    Head::Source {
                        source,
                        out: Output::new(head.outputs.len()),
                        routes: source_routes,
                        watermarks,
                        pace: options
                            .max_source_rate
                            .map(|rate| Pace::new(rate, head.parallelism)),
                        idle_since: None,
                        marked_idle: false,
                        polls: 0,
                    }
                }
                _ => {
                    let mut rx = Vec::new();
                    let mut input_of = Vec::new();
                    let mut first_pending = Vec::new();
                    for input in 0..head.inputs.len() {
                        let list = receivers
                            .get_mut(&(head.id, input))
                            .map(|r| std::mem::take(&mut r[subtask as usize]))
                            .unwrap_or_default();
                        let carries = carries_watermarks(graph, head.inputs[input].from);
                        for r in list {
                            rx.push(r);
                            input_of.push(input);
                            first_pending.push(carries);
                        }
                    }
                    let n = rx.len();
                    // One channel has nothing to wait for.
                    if n < 2 {
                        first_pending.iter_mut().for_each(|p| *p = false);
                    }
                    Head::Inputs(Inputs {
                        receivers: rx,
                        input_of,
                        watermarks: vec![MIN_TIMESTAMP; n],
                        status: vec![ChannelStatus::Active; n],
                        current: MIN_TIMESTAMP,
                        next: 0,
                        since_watermark: 0,
                        alignment: Alignment::new(n),
                        first_pending,
                        started: Instant::now(),
                    })
                }
            };
            let is_source = matches!(head.kind, NodeKind::Source(_));
            tasks.push(Task {
                name,
                index,
                source_counters,
                subtask,
                head_key_groups: KeyGroupRange::of_subtask(
                    subtask,
                    head.parallelism,
                    graph.max_parallelism,
                ),
                checkpointing: checkpoints.as_mut().map(|c| c.task(index, is_source)),
                head_node: head.id,
                source_records: 0,
                head: head_state,
                chain,
                cancel: cancel.clone(),
                resume_watermark: factory.restored_watermark(graph, head.id, subtask),
            });
        }
    }
    drop(senders);
    drop(receivers);

    let mut stats: Vec<(NodeId, u64, u64)> = Vec::new();
    let errors: Mutex<Vec<ExecError>> = Mutex::default();
    let targets = checkpointing::Targets::default();
    let fail = |error: ExecError| {
        cancel.cancel();
        errors.lock().unwrap_or_else(|e| e.into_inner()).push(error);
    };
    // Scoped threads: whatever happens, every started thread is joined before this returns.
    let checkpoints = std::thread::scope(|scope| {
        let coordination = match (checkpoints, remote_checkpoints, &options.checkpointing) {
            (Some(wiring), Some(link), _) => {
                Some(checkpointing::start_remote(scope, link, wiring, &fail))
            }
            (Some(wiring), None, Some(settings)) => Some(checkpointing::start(
                scope,
                checkpointing::JobEnv {
                    settings,
                    graph,
                    factory,
                    cancel,
                    targets: &targets,
                    fail: &fail,
                },
                wiring,
            )),
            _ => None,
        };
        let (outcomes, outcome) = crossbeam_channel::unbounded();
        let mut handles = Vec::new();
        for task in tasks {
            let run = TaskRun::new(task, outcomes.clone());
            let launched = match &options.host {
                Some(host) => host.launch(run),
                None => std::thread::Builder::new()
                    .name(run.name().to_string())
                    .spawn_scoped(scope, move || run.run_to_end())
                    .map(|handle| handles.push(handle))
                    .map_err(|e| format!("cannot start a thread: {e}")),
            };
            if let Err(message) = launched {
                fail(ExecError::build("executor", BuildError::internal(message)));
                break;
            }
        }
        drop(outcomes);
        // Until every task reported (a task its host drops reports too).
        for result in outcome.iter() {
            match result {
                Ok(counts) => stats.extend(counts),
                Err(e) => fail(e),
            }
        }
        for handle in handles {
            let _ = handle.join();
        }
        coordination.map(|c| c.finish()).unwrap_or_default()
    });
    let mut errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    let stopped = cancel.stop_requested()
        && errors
            .iter()
            .all(|e| matches!(e, ExecError::Cancelled | ExecError::Disconnected { .. }));
    if !errors.is_empty() && !stopped {
        // Report the root cause, not the tasks that stopped because of it.
        errors.sort_by_key(|e| match e {
            ExecError::Disconnected { .. } => 2,
            ExecError::Cancelled => 1,
            _ => 0,
        });
        return Err(errors.swap_remove(0));
    }
    let mut nodes: Vec<NodeStats> = graph
        .nodes
        .iter()
        .map(|n| NodeStats {
            name: n.name.clone(),
            ..Default::default()
        })
        .collect();
    for (node, records_in, records_out) in &stats {
        nodes[*node].records_in += records_in;
        nodes[*node].records_out += records_out;
    }
    Ok(JobStats {
        nodes,
        elapsed: started.elapsed(),
        checkpoints,
        stopped,
    })
}

/// The targets of every output port of `member` in one subtask, creating exchange writers for
/// edges that leave the task.
#[allow(clippy::too_many_arguments)]
fn port_targets(
    graph: &JobGraph,
    member: NodeId,
    subtask: u32,
    task_of: &[usize],
    position: &[usize],
    plan: &TaskPlan,
    senders: &mut HashMap<(NodeId, usize), Vec<Vec<Lane>>>,
    exchanges: &mut Vec<ExchangeWriter>,
    options: &ExecOptions,
    task_name: &str,
) -> Result<Vec<Vec<Target>>, ExecError> {
    let node = &graph.nodes[member];
    let mut result = Vec::new();
    for port in 0..node.outputs.len() {
        let mut targets = Vec::new();
        for (consumer, input) in graph.consumers(member, port) {
            let same_task = plan.members.contains(&consumer)
                && task_of[consumer] == task_of[member]
                && plan.head != consumer;
            if same_task {
                targets.push(Target::Local {
                    op: position[consumer],
                    input,
                });
                continue;
            }
            let edge = &graph.nodes[consumer].inputs[input];
            let to_p = graph.nodes[consumer].parallelism;
            let partitioner = match &edge.partitioning {
                Partitioning::Forward if node.parallelism == to_p => Partitioner::Forward,
                Partitioning::Forward | Partitioning::Rebalance => Partitioner::Rebalance {
                    next: subtask as usize % to_p as usize,
                },
                Partitioning::Broadcast => Partitioner::Broadcast,
                Partitioning::Hash(keys) => Partitioner::Hash {
                    keys: compile_keys(graph, member, port, keys)?,
                    max_parallelism: graph.max_parallelism,
                },
            };
            let channel_senders = senders
                .get_mut(&(consumer, input))
                .map(|s| std::mem::take(&mut s[subtask as usize]))
                .unwrap_or_default();
            let n = channel_senders.len();
            targets.push(Target::Exchange(exchanges.len()));
            exchanges.push(ExchangeWriter {
                partitioner,
                senders: channel_senders,
                buffers: vec![Vec::new(); n],
                batch_size: options.batch_size,
                task: task_name.to_string(),
                counters: None,
            });
        }
        result.push(targets);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Edge, FileFormat, Node, Port, SourceConnector, SourceSpec, WatermarkSpec};
    use crate::operator::OpResult;
    use crate::types::{DataType, Field, Schema};
    use std::sync::atomic::AtomicI64;

    #[test]
    fn a_pace_holds_a_source_back_only_while_it_is_ahead() {
        // A restored source starts at its checkpointed position: the pace counts from there.
        let mut fresh = Pace::new(1000, 1);
        assert_eq!(fresh.wait(70_000), None);
        let wait = fresh
            .wait(70_500)
            .expect("500 rows at 1000/s are due in 0.5 s");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        let mut behind = Pace::new(1000, 1);
        behind.started -= Duration::from_secs(1);
        assert_eq!(behind.wait(0), None);
        assert_eq!(behind.wait(500), None, "behind the pace: no wait");
    }

    /// Subtask 0 emits times 0..10 s, then idles until released; subtask 1 never has data.
    struct Scripted {
        subtask: u32,
        next: i64,
        release: Arc<AtomicBool>,
    }

    impl Source for Scripted {
        fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
            if self.release.load(Ordering::Relaxed) {
                return Ok(SourcePoll::Finished);
            }
            if self.subtask == 0 && self.next <= 10_000 {
                out.emit(0, Row::insert(vec![Value::Timestamp(self.next)]));
                self.next += 1000;
                return Ok(SourcePoll::Ready);
            }
            Ok(SourcePoll::Idle)
        }
    }

    /// Records the highest watermark it was given.
    struct Probe(Arc<AtomicI64>);

    impl Operator for Probe {
        fn process(&mut self, _: usize, _: Vec<Row>, _: &mut Output) -> OpResult {
            Ok(())
        }
        fn on_watermark(&mut self, wm: Timestamp, _: &mut Output) -> OpResult {
            self.0.fetch_max(wm, Ordering::Relaxed);
            Ok(())
        }
    }

    struct Factory {
        release: Arc<AtomicBool>,
        seen: Arc<AtomicI64>,
    }

    impl TaskFactory for Factory {
        fn source(
            &self,
            _: &JobGraph,
            _: NodeId,
            subtask: u32,
        ) -> Result<Box<dyn Source>, BuildError> {
            Ok(Box::new(Scripted {
                subtask,
                next: 0,
                release: Arc::clone(&self.release),
            }))
        }
        fn operator(
            &self,
            _: &JobGraph,
            _: NodeId,
            _: u32,
        ) -> Result<Box<dyn Operator>, BuildError> {
            Ok(Box::new(Probe(Arc::clone(&self.seen))))
        }
    }

    fn graph() -> JobGraph {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp)]));
        JobGraph {
            name: "idle".into(),
            max_parallelism: 128,
            nodes: vec![
                Node {
                    id: 0,
                    name: "source".into(),
                    parallelism: 2,
                    inputs: vec![],
                    outputs: vec![Port {
                        name: String::new(),
                        schema: schema.clone(),
                        updating: false,
                    }],
                    kind: NodeKind::Source(SourceSpec {
                        connector: SourceConnector::File {
                            path: String::new(),
                            format: FileFormat::Nexmark,
                        },
                        watermark: Some(WatermarkSpec {
                            column: "t".into(),
                            delay: 0,
                            idle_timeout: Some(20),
                        }),
                    }),
                },
                Node {
                    id: 1,
                    name: "probe".into(),
                    parallelism: 1,
                    inputs: vec![Edge {
                        from: 0,
                        port: 0,
                        partitioning: Partitioning::Rebalance,
                    }],
                    outputs: vec![Port {
                        name: String::new(),
                        schema,
                        updating: false,
                    }],
                    kind: NodeKind::Union,
                },
            ],
        }
    }

    #[test]
    fn an_idle_subtask_does_not_hold_back_the_watermark() {
        let factory = Factory {
            release: Arc::default(),
            seen: Arc::new(AtomicI64::new(MIN_TIMESTAMP)),
        };
        std::thread::scope(|scope| {
            let job = scope.spawn(|| {
                execute(
                    &graph(),
                    &factory,
                    &ExecOptions::default(),
                    &CancelHandle::default(),
                )
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            while factory.seen.load(Ordering::Relaxed) < 10_000 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let seen = factory.seen.load(Ordering::Relaxed);
            factory.release.store(true, Ordering::Relaxed);
            job.join().unwrap().unwrap();
            assert_eq!(
                seen, 10_000,
                "subtask 1 is idle, so subtask 0's watermark must pass"
            );
        });
    }

    #[test]
    fn a_newer_barrier_abandons_an_older_alignment_and_stale_barriers_are_dropped() {
        let active = vec![ChannelStatus::Active; 3];
        let mut a = Alignment::new(3);
        assert_eq!(a.on_barrier(0, 5), None);
        assert_eq!(a.on_barrier(1, 5), None);
        assert!(a.blocked(0) && a.blocked(1) && !a.blocked(2));
        assert_eq!(a.complete(&active), None);
        // Channel 2 never got barrier 5 (its trigger was lost); 6 arrives there first.
        assert_eq!(a.on_barrier(2, 6), Some(5));
        assert!(!a.blocked(0) && !a.blocked(1) && a.blocked(2));
        // A late barrier 5 is stale now.
        assert_eq!(a.on_barrier(0, 5), None);
        assert!(!a.blocked(0));
        a.on_barrier(0, 6);
        assert_eq!(a.complete(&active), None);
        a.on_barrier(1, 6);
        assert_eq!(a.complete(&active), Some(6));
        assert!((0..3).all(|c| !a.blocked(c)));
        // After 6 completed, a barrier 6 or older is stale; ended channels count as aligned.
        assert_eq!(a.on_barrier(2, 6), None);
        assert!(!a.blocked(2));
        let ended = [
            ChannelStatus::Active,
            ChannelStatus::Ended,
            ChannelStatus::Ended,
        ];
        a.on_barrier(0, 7);
        assert_eq!(a.complete(&ended), Some(7));
    }

    #[test]
    fn without_idleness_the_minimum_waits_for_every_input() {
        let mut inputs = Inputs {
            receivers: vec![bounded(1).1, bounded(1).1],
            input_of: vec![0, 0],
            watermarks: vec![5, MIN_TIMESTAMP],
            status: vec![ChannelStatus::Active; 2],
            current: MIN_TIMESTAMP,
            next: 0,
            since_watermark: 0,
            alignment: Alignment::new(2),
            first_pending: vec![false; 2],
            started: Instant::now(),
        };
        assert_eq!(inputs.combined(), MIN_TIMESTAMP);
        inputs.status[1] = ChannelStatus::Idle;
        assert_eq!(inputs.combined(), 5);
        inputs.status[0] = ChannelStatus::Idle;
        assert_eq!(inputs.combined(), 5, "all idle: the largest idle watermark");
        inputs.status[0] = ChannelStatus::Ended;
        assert_eq!(inputs.combined(), MIN_TIMESTAMP);
        inputs.status[1] = ChannelStatus::Ended;
        assert_eq!(inputs.combined(), MAX_TIMESTAMP);
    }
}

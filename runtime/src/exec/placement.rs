//! Running part of a job in this process: the seams between the executor and a cluster.
//!
//! A cluster worker runs some task subtasks of a job; the rest run in other processes. The
//! executor stays the same: it asks a [`Network`] for the ends of channels that cross the
//! process boundary and a [`CheckpointLink`] for checkpoint triggers and acknowledgements, so
//! `eddy run` and `eddy local` execute the same code.

use crate::checkpoint::coordinator::CoordinatorInput;
use crate::checkpoint::{CheckpointId, UploadTarget};
use crate::element::Element;
use crate::graph::{JobGraph, NodeId};
use crossbeam_channel::Sender;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One channel of an exchange edge: subtask `from` of the sending node to subtask `to` of
/// `node`, at its input `input`. Unique within a job attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub node: NodeId,
    pub input: usize,
    pub from: u32,
    pub to: u32,
}

/// The sending end of a channel whose receiver is in another process. `send` blocks while the
/// receiver has granted no credit: that is how backpressure crosses processes.
pub trait Outlet: Send {
    fn send(&self, element: Element) -> Result<(), String>;
}

/// Connects channels that cross the process boundary.
pub trait Network: Send + Sync {
    /// The sending end of `key`, whose receiving task runs elsewhere.
    fn outlet(&self, key: ChannelKey) -> Result<Box<dyn Outlet>, String>;
    /// `key`'s sending task runs elsewhere: deliver what arrives for it into `into` (bounded;
    /// grant credits only as it drains).
    fn inlet(&self, key: ChannelKey, into: Sender<Element>) -> Result<(), String>;
}

/// Checkpointing driven by a coordinator in another process.
pub trait CheckpointLink: Send + Sync {
    /// The trigger inboxes of this process's source tasks, by global task index.
    fn register_sources(&self, triggers: HashMap<usize, Sender<CheckpointId>>);
    /// Where checkpoint `id` is written (known once its trigger arrived in this process).
    fn target(&self, id: CheckpointId) -> Option<UploadTarget>;
    /// A task's snapshot is stored (or it ended): tell the coordinator.
    fn acknowledge(&self, input: CoordinatorInput);
}

/// Which task subtasks of a job run here, and how they reach the others.
#[derive(Clone)]
pub struct Placement {
    /// Global task indices (see [`task_layout`]) that run in this process.
    pub local: HashSet<usize>,
    pub network: Arc<dyn Network>,
    /// With checkpointing, where triggers come from and acknowledgements go.
    pub checkpoints: Option<Arc<dyn CheckpointLink>>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A task of the job plan: a head node and the nodes chained to it, run as `parallelism`
/// subtasks with global indices `first_index..first_index + parallelism`.
#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub head: NodeId,
    pub members: Vec<NodeId>,
    pub name: String,
    pub parallelism: u32,
    pub first_index: usize,
    pub is_source: bool,
}

/// The tasks of a job, in the order the executor numbers them: every process that plans the
/// same graph gets the same numbering, which is how a coordinator and workers agree on tasks.
pub fn task_layout(graph: &JobGraph) -> Vec<TaskInfo> {
    let mut next = 0;
    super::plan_tasks(graph)
        .into_iter()
        .map(|plan| {
            let head = &graph.nodes[plan.head];
            let info = TaskInfo {
                head: plan.head,
                name: head.name.clone(),
                members: plan.members,
                parallelism: head.parallelism,
                first_index: next,
                is_source: matches!(head.kind, crate::graph::NodeKind::Source(_)),
            };
            next += head.parallelism as usize;
            info
        })
        .collect()
}

/// Live counters of one operator subtask, readable while the job runs (for metrics and
/// `eddy status`).
#[derive(Debug, Default)]
pub struct SubtaskCounters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Time spent in the operator's code.
    pub busy_ns: AtomicU64,
    /// Time the task waited for room downstream (backpressure).
    pub backpressured_ns: AtomicU64,
}

impl SubtaskCounters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One operator subtask's counters, labelled.
#[derive(Clone, Debug)]
pub struct CounterEntry {
    pub node: String,
    pub subtask: u32,
    /// The global task index it runs in.
    pub task: usize,
    pub counters: Arc<SubtaskCounters>,
}

/// The live counters of every operator subtask of a run, registered as tasks are built.
#[derive(Debug, Default)]
pub struct LiveStats {
    entries: Mutex<Vec<CounterEntry>>,
}

impl LiveStats {
    pub(super) fn register(&self, node: &str, subtask: u32, task: usize) -> Arc<SubtaskCounters> {
        let counters = Arc::new(SubtaskCounters::default());
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(CounterEntry {
                node: node.to_string(),
                subtask,
                task,
                counters: Arc::clone(&counters),
            });
        counters
    }

    /// Every operator subtask's counters.
    pub fn entries(&self) -> Vec<CounterEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The checkpoint coordinator of a job: its operators and which task subtasks are sources
/// come from the graph, so `eddy run`'s driver and the cluster leader build it the same way.
pub fn checkpoint_coordinator(
    graph: &JobGraph,
    store: crate::checkpoint::CheckpointStore,
    retain: usize,
    first_id: CheckpointId,
    limits: crate::checkpoint::coordinator::CheckpointLimits,
    prune_on_complete: bool,
) -> crate::checkpoint::coordinator::CheckpointCoordinator {
    use crate::checkpoint::coordinator::{CheckpointCoordinator, CoordinatorConfig, NodeInfo};
    let nodes = graph
        .nodes
        .iter()
        .map(|n| NodeInfo {
            name: n.name.clone(),
            kind: n.kind.type_name().to_string(),
            parallelism: n.parallelism,
        })
        .collect();
    let mut sources = Vec::new();
    for task in task_layout(graph) {
        sources.extend(std::iter::repeat_n(
            task.is_source,
            task.parallelism as usize,
        ));
    }
    CheckpointCoordinator::new(
        CoordinatorConfig {
            job: graph.name.clone(),
            max_parallelism: graph.max_parallelism,
            retain,
            first_id,
            limits,
            prune_on_complete,
        },
        store,
        nodes,
        sources,
    )
}

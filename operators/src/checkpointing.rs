//! How operators take part in checkpoints: the state backend a run uses, the wrapper that
//! snapshots a keyed operator's RocksDB state, and what a restore hands each subtask.

use crate::compile::BuildError;
use eddy_runtime::checkpoint::{
    CheckpointMetadata, CheckpointStore, KeyedStateHandle, OperatorSnapshot, SnapshotPoint,
    SubtaskState,
};
use eddy_runtime::graph::{JobGraph, Node, NodeKind};
use eddy_runtime::keygroup::KeyGroupRange;
use eddy_runtime::operator::{OpResult, Operator, OperatorError, Output};
use eddy_runtime::types::{Row, Timestamp};
use eddy_state_rocksdb::RocksBackend;
use std::path::PathBuf;
use std::sync::Arc;

pub use eddy_state_rocksdb::RocksOptions;

/// Where keyed operators keep their state.
#[derive(Clone, Debug, Default)]
pub enum StateBackendChoice {
    /// Hash maps on the heap: fastest, lost on a crash, cannot checkpoint.
    #[default]
    Memory,
    /// One RocksDB instance per operator subtask under `dir` (local working state).
    RocksDb { dir: PathBuf, options: RocksOptions },
}

/// A completed checkpoint or savepoint a run starts from.
#[derive(Clone, Debug)]
pub struct Restored {
    /// Where the checkpoint's files are.
    pub store: CheckpointStore,
    /// What the checkpoint holds.
    pub metadata: Arc<CheckpointMetadata>,
    /// It is in the storage new checkpoints go to, so they may refer to its files instead of
    /// copying them (false for a savepoint, which stays independent).
    pub incremental_base: bool,
}

impl Restored {
    /// The old subtasks of `node` whose key groups overlap `range`.
    pub fn subtasks<'a>(
        &'a self,
        node: &'a Node,
        range: KeyGroupRange,
    ) -> impl Iterator<Item = &'a SubtaskState> + 'a {
        self.metadata
            .operator(&node.name)
            .into_iter()
            .flat_map(|op| &op.subtasks)
            .filter(move |s| s.key_groups.start < range.end && range.start < s.key_groups.end)
    }

    /// The watermark a new subtask owning `range` resumes from: the lowest of the old
    /// subtasks whose key groups it takes over (at the same parallelism, its own), so that it
    /// never drops a row one of them would have kept. `None` when one of them had none.
    pub fn watermark(
        &self,
        node: &Node,
        range: KeyGroupRange,
    ) -> Option<eddy_runtime::types::Timestamp> {
        let mut lowest: Option<eddy_runtime::types::Timestamp> = None;
        for s in self.subtasks(node, range) {
            let w = s.watermark?;
            lowest = Some(lowest.map_or(w, |l| l.min(w)));
        }
        lowest
    }

    /// The keyed-state handles for a new subtask owning `range`.
    pub fn keyed<'a>(
        &'a self,
        node: &'a Node,
        range: KeyGroupRange,
    ) -> Vec<(KeyGroupRange, &'a KeyedStateHandle)> {
        self.subtasks(node, range)
            .filter_map(|s| s.keyed.as_ref().map(|k| (s.key_groups, k)))
            .collect()
    }
}

/// Whether a node keeps keyed state.
pub fn is_keyed(kind: &NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::WindowAggregate { .. }
            | NodeKind::GroupAggregate { .. }
            | NodeKind::Join(_)
            | NodeKind::TopN(_)
            | NodeKind::Deduplicate(_)
            | NodeKind::Anomaly(_)
    )
}

/// Whether a node has any state a checkpoint must carry.
fn has_state(kind: &NodeKind) -> bool {
    is_keyed(kind) || matches!(kind, NodeKind::Source(_) | NodeKind::Sink(_))
}

/// Refuses a checkpoint that does not fit the job: a stateful operator missing on either side,
/// of another kind, or another maximum parallelism. Names the operator and says what to do.
pub fn check_fits(graph: &JobGraph, metadata: &CheckpointMetadata) -> Result<(), String> {
    let advice = "start without it (a new --checkpoint-dir) or run the job it was taken from";
    if metadata.max_parallelism != graph.max_parallelism {
        return Err(format!(
            "checkpoint {} was taken with max parallelism {}, the job has {}; {advice}",
            metadata.checkpoint, metadata.max_parallelism, graph.max_parallelism
        ));
    }
    for node in graph.nodes.iter().filter(|n| has_state(&n.kind)) {
        match metadata.operator(&node.name) {
            None => {
                return Err(format!(
                    "checkpoint {} has no state for operator `{}` (operators were renamed or added); {advice}",
                    metadata.checkpoint, node.name
                ))
            }
            Some(op) if op.kind != node.kind.type_name() => {
                return Err(format!(
                    "operator `{}` is a {} in checkpoint {} but a {} in the job; {advice}",
                    node.name,
                    op.kind,
                    metadata.checkpoint,
                    node.kind.type_name()
                ))
            }
            Some(_) => {}
        }
    }
    for op in &metadata.operators {
        let stateful = op
            .subtasks
            .iter()
            .any(|s| s.keyed.is_some() || !s.state.is_null());
        if stateful && !graph.nodes.iter().any(|n| n.name == op.name) {
            return Err(format!(
                "checkpoint {} holds state of operator `{}`, which the job no longer has; {advice}",
                metadata.checkpoint, op.name
            ));
        }
    }
    Ok(())
}

/// A node name as part of a file name: ASCII letters, digits and '-', anything else '_'.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => c,
            _ => '_',
        })
        .collect()
}

/// A file-system-safe name for an operator subtask's files.
pub fn owner_name(node: &Node, subtask: u32) -> String {
    format!("{:03}-{}-{subtask}", node.id, file_safe(&node.name))
}

/// A keyed operator with its RocksDB state: reports storage errors as operator errors and adds
/// the keyed state to the operator's snapshots.
pub struct Stateful {
    /// The keyed operator, built over `backend`.
    pub op: Box<dyn Operator>,
    /// Its state, snapshotted at every barrier.
    pub backend: RocksBackend,
    /// The operator's name, for error messages.
    pub name: String,
}

/// A keyed-state failure as an operator error of the same domain.
fn state_error(name: &str, what: &str, e: eddy_state_rocksdb::StateError) -> OperatorError {
    use eddy_runtime::error::FaultDomain;
    let message = format!("{what} `{name}`: {e}");
    match e.domain() {
        FaultDomain::Transient => OperatorError::Transient(message),
        FaultDomain::User => OperatorError::User(message),
        FaultDomain::Internal => OperatorError::Message(message),
    }
}

impl Stateful {
    fn check(&self, result: OpResult) -> OpResult {
        result?;
        match self.backend.take_error() {
            Some(e) => Err(state_error(&self.name, "keyed state of", e)),
            None => Ok(()),
        }
    }
}

impl Operator for Stateful {
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let result = self.op.process(input, rows, out);
        self.check(result)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        let result = self.op.on_watermark(watermark, out);
        self.check(result)
    }

    fn on_end(&mut self, out: &mut Output) -> OpResult {
        let result = self.op.on_end(out);
        self.check(result)
    }

    fn snapshot(&mut self, point: SnapshotPoint) -> OpResult<OperatorSnapshot> {
        let mut snapshot = self.op.snapshot(point)?;
        if let SnapshotPoint::Barrier(id) = point {
            let upload = self
                .backend
                .snapshot(id)
                .map_err(|e| state_error(&self.name, "cannot snapshot", e))?;
            snapshot.keyed = Some(upload);
        }
        Ok(snapshot)
    }
}

/// The error for a keyed backend that cannot open.
pub fn open_error(node: &Node, e: eddy_state_rocksdb::StateError) -> BuildError {
    BuildError {
        message: format!("cannot open the state of `{}`: {e}", node.name),
        domain: e.domain(),
    }
}

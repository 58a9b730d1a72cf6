//! Checkpoints: asynchronous barrier snapshots (Flink's ABS) of a running job.
//!
//! The [`coordinator::CheckpointCoordinator`] decides when a checkpoint starts and when it is
//! complete; it only exchanges messages, so it can move into the cluster coordinator. Sources
//! receive a trigger, record their position and send a [`crate::element::Element::Barrier`]
//! downstream; a task with several inputs aligns the barriers, then every operator of the task
//! takes its snapshot: the synchronous part on the task thread (operator state, a RocksDB
//! checkpoint of hard links), the upload of files on a background thread. When every task has
//! acknowledged, the coordinator writes the metadata, atomically and last ([`store`]), and the
//! sinks commit what the checkpoint covers.

pub mod coordinator;
pub mod storage;
pub mod store;

pub use store::{
    CheckpointError, CheckpointMetadata, CheckpointStore, KeyedStateHandle, OperatorState,
    SavepointPointer, StateDescriptor, StoredFile, SubtaskState,
};

/// Checkpoints are numbered from 1, increasing over restarts of a job.
pub type CheckpointId = u64;

/// When an operator is asked for its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotPoint {
    /// The barrier of this checkpoint arrived.
    Barrier(CheckpointId),
    /// The operator's input ended and it has fired and flushed everything: its keyed state is
    /// no longer needed, only what a sink must still commit.
    EndOfInput,
}

/// Where and how the files of one checkpoint are written.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub store: CheckpointStore,
    pub checkpoint: CheckpointId,
    /// Files already in this store from earlier checkpoints may be referenced instead of copied.
    /// False for savepoints, which must stand alone.
    pub incremental: bool,
}

/// The asynchronous part of a keyed-state snapshot: uploads the files the synchronous part
/// prepared and says where they are.
pub type PendingKeyedUpload =
    Box<dyn FnOnce(&UploadTarget) -> Result<KeyedStateHandle, CheckpointError> + Send>;

/// What one operator subtask hands over at a barrier.
#[derive(Default)]
pub struct OperatorSnapshot {
    /// Small operator state (JSON), stored inline in the metadata.
    pub state: serde_json::Value,
    /// Keyed state still to be uploaded.
    pub keyed: Option<PendingKeyedUpload>,
}

impl std::fmt::Debug for OperatorSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSnapshot")
            .field("state", &self.state)
            .field("keyed", &self.keyed.is_some())
            .finish()
    }
}

//! The layout of checkpoints in a [`CheckpointStorage`], and their metadata.
//!
//! ```text
//! shared/<owner>-<run>-<file>.sst     immutable RocksDB files, shared by every checkpoint that
//!                                     contains them (incremental checkpoints)
//! chk-0000000007/<owner>/<file>       the small per-checkpoint files of one operator subtask's
//!                                     RocksDB (MANIFEST, CURRENT, OPTIONS)
//! chk-0000000007/_metadata            JSON: every operator subtask's state; written last and
//!                                     atomically, so a checkpoint exists exactly when it is there
//! ```
//! A directory of `chk-*` without `_metadata` is a checkpoint that never completed; it is deleted
//! on the next start. Shared files are deleted when no retained checkpoint refers to them.

use super::storage::CheckpointStorage;
use super::CheckpointId;
use crate::keygroup::KeyGroupRange;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The version of the metadata format this build writes and reads.
pub const METADATA_FORMAT: u32 = 1;

const METADATA: &str = "_metadata";
const SHARED: &str = "shared";
const SAVEPOINT: &str = "_savepoint";
const RESERVED: &str = "_reserved";

/// Where the newest savepoint of a job is, when it is newer than its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointPointer {
    pub checkpoint: CheckpointId,
    /// The savepoint's storage (a directory path for directory storage).
    pub location: String,
}

/// Why a checkpoint could not be written, found or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint `{location}` is corrupt: {message}")]
    Corrupt { location: String, message: String },
    #[error("{0}")]
    Incompatible(String),
    #[error("{0}")]
    Failed(String),
    /// A completed checkpoint could not be committed (a sink's files or rows not published).
    #[error("cannot commit checkpoint {checkpoint} at `{node}`: {source}")]
    Commit {
        checkpoint: CheckpointId,
        node: String,
        #[source]
        source: crate::error::BuildError,
    },
}

impl CheckpointError {
    /// Whose fault it is: storage I/O is transient, a checkpoint that does not fit the job is
    /// the user's, corrupt metadata is internal, a commit says for itself.
    pub fn domain(&self) -> crate::error::FaultDomain {
        use crate::error::FaultDomain;
        match self {
            CheckpointError::Io { .. } => FaultDomain::Transient,
            CheckpointError::Incompatible(_) => FaultDomain::User,
            CheckpointError::Corrupt { .. } | CheckpointError::Failed(_) => FaultDomain::Internal,
            CheckpointError::Commit { source, .. } => source.domain,
        }
    }
}

impl CheckpointError {
    fn io(context: impl Into<String>, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The state a subtask of a keyed operator keeps in RocksDB, as stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyedStateHandle {
    /// The states the operator declared, in declaration order (checked on restore).
    pub states: Vec<StateDescriptor>,
    /// The files of the database: local file name and storage key.
    pub files: Vec<StoredFile>,
}

/// One declared keyed state: its name, shape and Rust types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDescriptor {
    pub name: String,
    pub kind: String,
    pub types: String,
}

/// A file of a snapshot: its name in the database directory and its key in storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub local: String,
    pub key: String,
    /// Bytes, for the checkpoint's size (0 in metadata written before sizes were recorded).
    #[serde(default)]
    pub size: u64,
}

/// The state of one subtask of one operator (or source, or sink) at a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtaskState {
    pub subtask: u32,
    pub key_groups: KeyGroupRange,
    /// The subtask had finished (end of input) when the checkpoint was taken.
    #[serde(default)]
    pub finished: bool,
    /// Small state of the operator itself: source positions, a sink's staged files.
    #[serde(default)]
    pub state: serde_json::Value,
    /// Keyed state, for operators that have it.
    #[serde(default)]
    pub keyed: Option<KeyedStateHandle>,
    /// The watermark the operator had seen at the checkpoint. A restored task resumes from it
    /// (instead of −∞), so that a row that was late before the restore is late after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<crate::types::Timestamp>,
}

/// All subtasks of one operator at a checkpoint. Operators are identified by their name in the
/// job, which is what a restore matches on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    pub name: String,
    /// What the node is (e.g. `window_aggregate`): a restore refuses a different kind.
    pub kind: String,
    pub parallelism: u32,
    pub subtasks: Vec<SubtaskState>,
}

/// A completed checkpoint: what `_metadata` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format: u32,
    pub job: String,
    pub checkpoint: CheckpointId,
    /// Taken after every task had finished: restoring it only re-commits the sinks.
    pub finished: bool,
    /// Wall-clock milliseconds when the checkpoint completed.
    pub completed_at_ms: i64,
    pub max_parallelism: u32,
    pub operators: Vec<OperatorState>,
}

impl CheckpointMetadata {
    /// The state of the operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorState> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// Bytes of state the checkpoint refers to: every keyed-state file (shared ones included)
    /// and the operators' small state. What a restore reads.
    pub fn size_bytes(&self) -> u64 {
        let subtasks = self.operators.iter().flat_map(|o| &o.subtasks);
        subtasks
            .map(|s| {
                let files: u64 = s.keyed.iter().flat_map(|k| &k.files).map(|f| f.size).sum();
                files + s.state.to_string().len() as u64
            })
            .sum()
    }

    /// Every storage key the checkpoint refers to: keyed-state files and stored operator state.
    fn referenced_keys(&self) -> impl Iterator<Item = &str> {
        let subtasks = self.operators.iter().flat_map(|o| &o.subtasks);
        let files = subtasks
            .clone()
            .filter_map(|s| s.keyed.as_ref())
            .flat_map(|k| &k.files)
            .map(|f| f.key.as_str());
        files.chain(subtasks.filter_map(|s| stored_state_key(&s.state)))
    }
}

/// Operator state larger than this is stored as a file of its own and referred to from the
/// metadata, so that acknowledgements and `_metadata` stay small whatever the state (an
/// updating sink's whole table, many Kafka partitions).
pub const INLINE_STATE_BYTES: usize = 64 * 1024;

const STORED_STATE: &str = "$stored";

/// The key a reference to stored operator state names (`{"$stored": KEY}`).
pub fn stored_state_key(state: &serde_json::Value) -> Option<&str> {
    match state {
        serde_json::Value::Object(map) if map.len() == 1 => map.get(STORED_STATE)?.as_str(),
        _ => None,
    }
}

/// Stores `state` under `key` when it is larger than [`INLINE_STATE_BYTES`] and returns the
/// reference to it; small state comes back as it is.
pub fn store_large_state(
    storage: &dyn CheckpointStorage,
    key: &str,
    state: serde_json::Value,
) -> Result<serde_json::Value, CheckpointError> {
    let bytes = serde_json::to_vec(&state)
        .map_err(|e| CheckpointError::Failed(format!("cannot encode operator state: {e}")))?;
    if bytes.len() <= INLINE_STATE_BYTES {
        return Ok(state);
    }
    storage.put_bytes(key, &bytes).map_err(|e| {
        CheckpointError::io(format!("cannot store `{key}` in {}", storage.describe()), e)
    })?;
    Ok(serde_json::json!({ STORED_STATE: key }))
}

/// Checkpoints of one job in a storage: naming, publishing, finding and pruning.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    storage: Arc<dyn CheckpointStorage>,
}

/// The directory name of a checkpoint.
pub fn checkpoint_dir(id: CheckpointId) -> String {
    format!("chk-{id:010}")
}

fn parse_checkpoint_dir(name: &str) -> Option<CheckpointId> {
    name.strip_prefix("chk-")?.parse().ok()
}

impl CheckpointStore {
    /// The checkpoints of one job in `storage` (a directory today, object storage later).
    pub fn new(storage: Arc<dyn CheckpointStorage>) -> CheckpointStore {
        CheckpointStore { storage }
    }

    /// The checkpoints in a local (or mounted) directory, created if missing.
    pub fn open_dir(dir: &std::path::Path) -> Result<CheckpointStore, CheckpointError> {
        let storage = super::storage::DirStorage::new(dir).map_err(|e| {
            CheckpointError::io(
                format!("cannot use checkpoint directory `{}`", dir.display()),
                e,
            )
        })?;
        Ok(CheckpointStore::new(Arc::new(storage)))
    }

    /// The storage underneath.
    pub fn storage(&self) -> &dyn CheckpointStorage {
        &*self.storage
    }

    /// The key of a file shared between checkpoints.
    pub fn shared_key(name: &str) -> String {
        format!("{SHARED}/{name}")
    }

    /// The key of a file private to one checkpoint and owner (an operator subtask).
    pub fn private_key(id: CheckpointId, owner: &str, name: &str) -> String {
        format!("{}/{owner}/{name}", checkpoint_dir(id))
    }

    /// Publishes a checkpoint: after this returns, it is the one a restart resumes from.
    pub fn publish(&self, metadata: &CheckpointMetadata) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec_pretty(metadata)
            .map_err(|e| CheckpointError::Failed(format!("cannot encode metadata: {e}")))?;
        let key = format!("{}/{METADATA}", checkpoint_dir(metadata.checkpoint));
        self.storage.put_bytes(&key, &bytes).map_err(|e| {
            CheckpointError::io(
                format!("cannot write `{key}` in `{}`", self.storage.describe()),
                e,
            )
        })
    }

    /// Records, next to the checkpoints, that a newer savepoint exists (after a stop with
    /// savepoint), so that a restart from this directory resumes from it rather than from an
    /// older checkpoint, which would publish again what the savepoint's sinks published.
    pub fn record_savepoint(
        &self,
        checkpoint: CheckpointId,
        location: &str,
    ) -> Result<(), CheckpointError> {
        let pointer = SavepointPointer {
            checkpoint,
            location: location.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&pointer)
            .map_err(|e| CheckpointError::Failed(format!("cannot encode {SAVEPOINT}: {e}")))?;
        self.storage.put_bytes(SAVEPOINT, &bytes).map_err(|e| {
            CheckpointError::io(
                format!(
                    "cannot write `{SAVEPOINT}` in `{}`",
                    self.storage.describe()
                ),
                e,
            )
        })
    }

    /// The savepoint recorded by [`CheckpointStore::record_savepoint`], if any.
    pub fn recorded_savepoint(&self) -> Result<Option<SavepointPointer>, CheckpointError> {
        let location = format!("{}/{SAVEPOINT}", self.storage.describe());
        match self.storage.get_bytes(SAVEPOINT) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CheckpointError::Corrupt {
                        location,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CheckpointError::io(format!("cannot read `{location}`"), e)),
        }
    }

    /// Records that ids up to `id` are taken, before barriers of checkpoint `id` exist: a later
    /// run continues above it even when the checkpoint never completed or its directory was
    /// removed, so no id whose output a sink may have committed is ever used twice.
    pub fn reserve(&self, id: CheckpointId) -> Result<(), CheckpointError> {
        if self.reserved()? >= id {
            return Ok(());
        }
        self.storage
            .put_bytes(RESERVED, id.to_string().as_bytes())
            .map_err(|e| {
                CheckpointError::io(
                    format!("cannot write `{RESERVED}` in `{}`", self.storage.describe()),
                    e,
                )
            })
    }

    /// The highest id [`CheckpointStore::reserve`] recorded (0: none).
    pub fn reserved(&self) -> Result<CheckpointId, CheckpointError> {
        let location = format!("{}/{RESERVED}", self.storage.describe());
        match self.storage.get_bytes(RESERVED) {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| CheckpointError::Corrupt {
                    location,
                    message: "not a checkpoint id".into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(CheckpointError::io(format!("cannot read `{location}`"), e)),
        }
    }

    /// The id a new run's first checkpoint takes: above every completed and reserved one.
    pub fn next_id(&self) -> Result<CheckpointId, CheckpointError> {
        let completed = self.completed()?.last().copied().unwrap_or(0);
        Ok(completed.max(self.reserved()?) + 1)
    }

    /// Ids of the completed checkpoints, oldest first.
    pub fn completed(&self) -> Result<Vec<CheckpointId>, CheckpointError> {
        let mut ids = Vec::new();
        for name in self.list_root()? {
            if let Some(id) = parse_checkpoint_dir(&name) {
                let files = self.storage.list(&name).map_err(|e| {
                    CheckpointError::io(format!("cannot list `{}`", self.storage.describe()), e)
                })?;
                if files.iter().any(|f| f == METADATA) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn list_root(&self) -> Result<Vec<String>, CheckpointError> {
        self.storage.list("").map_err(|e| {
            CheckpointError::io(
                format!(
                    "cannot read checkpoint directory `{}`",
                    self.storage.describe()
                ),
                e,
            )
        })
    }

    /// Reads the metadata of checkpoint `id`, with its operator state (also what is stored
    /// apart from the metadata).
    pub fn load(&self, id: CheckpointId) -> Result<CheckpointMetadata, CheckpointError> {
        let mut metadata = self.load_references(id)?;
        self.resolve_stored_states(&mut metadata)?;
        Ok(metadata)
    }

    /// Reads the metadata of checkpoint `id` as it is stored: large operator state as a
    /// reference (what pruning needs, without reading and parsing that state).
    fn load_references(&self, id: CheckpointId) -> Result<CheckpointMetadata, CheckpointError> {
        let key = format!("{}/{METADATA}", checkpoint_dir(id));
        let location = format!("{}/{key}", self.storage.describe());
        let bytes = self
            .storage
            .get_bytes(&key)
            .map_err(|e| CheckpointError::io(format!("cannot read `{location}`"), e))?;
        let metadata: CheckpointMetadata =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                location: location.clone(),
                message: e.to_string(),
            })?;
        if metadata.format != METADATA_FORMAT {
            return Err(CheckpointError::Corrupt {
                location,
                message: format!(
                    "metadata format {} (this eddy reads format {METADATA_FORMAT})",
                    metadata.format
                ),
            });
        }
        Ok(metadata)
    }

    /// Replaces references to stored operator state by the state, so that readers of the
    /// metadata see it as if it had been inline.
    fn resolve_stored_states(
        &self,
        metadata: &mut CheckpointMetadata,
    ) -> Result<(), CheckpointError> {
        for state in metadata.operators.iter_mut().flat_map(|o| &mut o.subtasks) {
            if let Cow::Owned(resolved) = self.resolve_state(state)? {
                *state = resolved;
            }
        }
        Ok(())
    }

    /// A subtask's state with its operator state read from this storage when the metadata
    /// refers to it (metadata fresh from a checkpoint coordinator still does).
    pub fn resolve_state<'a>(
        &self,
        state: &'a SubtaskState,
    ) -> Result<Cow<'a, SubtaskState>, CheckpointError> {
        let Some(key) = stored_state_key(&state.state) else {
            return Ok(Cow::Borrowed(state));
        };
        let location = format!("{}/{key}", self.storage.describe());
        let bytes = self
            .storage
            .get_bytes(key)
            .map_err(|e| CheckpointError::io(format!("cannot read `{location}`"), e))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            location,
            message: e.to_string(),
        })?;
        Ok(Cow::Owned(SubtaskState {
            state: value,
            ..state.clone()
        }))
    }

    /// The newest completed checkpoint, if any.
    pub fn latest(&self) -> Result<Option<CheckpointMetadata>, CheckpointError> {
        match self.completed()?.last() {
            Some(&id) => self.load(id).map(Some),
            None => Ok(None),
        }
    }

    /// Keeps the newest `retain` completed checkpoints and deletes the rest: older checkpoints,
    /// checkpoints that never completed and shared files that no kept checkpoint refers to.
    /// Call it only while no checkpoint is being written (the coordinator runs one at a time
    /// and prunes between them), since files of a checkpoint in flight are referenced by no
    /// metadata yet.
    pub fn prune(&self, retain: usize) -> Result<(), CheckpointError> {
        self.prune_keeping(retain, None)
    }

    /// [`CheckpointStore::prune`], keeping checkpoint `keep` too (a restore point that newer
    /// completed checkpoints, not yet recorded as such, would otherwise push out). A cluster
    /// prunes so when it starts an attempt: an attempt that failed before its first checkpoint
    /// completed left the files of its checkpoints in flight, and attempt after attempt they
    /// filled the disk, which made every checkpoint fail (found by the chaos harness).
    pub fn prune_keeping(
        &self,
        retain: usize,
        keep: Option<CheckpointId>,
    ) -> Result<(), CheckpointError> {
        let completed = self.completed()?;
        let keep_from = completed.len().saturating_sub(retain.max(1));
        let mut kept: Vec<CheckpointId> = completed[keep_from..].to_vec();
        kept.extend(keep.filter(|id| completed.contains(id) && !kept.contains(id)));
        let io = |e| CheckpointError::io(format!("cannot prune `{}`", self.storage.describe()), e);
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for &id in &kept {
            referenced.extend(
                self.load_references(id)?
                    .referenced_keys()
                    .map(str::to_string),
            );
        }
        let droppable: BTreeSet<String> = self
            .storage
            .list(SHARED)
            .map_err(io)?
            .iter()
            .map(|name| Self::shared_key(name))
            .collect();
        for name in self.list_root()? {
            let Some(id) = parse_checkpoint_dir(&name) else {
                continue;
            };
            if !kept.contains(&id) {
                self.storage.delete_prefix(&name).map_err(io)?;
            }
        }
        for key in droppable.difference(&referenced) {
            self.storage.delete(key).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::DirStorage;

    fn metadata(id: CheckpointId, files: &[&str]) -> CheckpointMetadata {
        CheckpointMetadata {
            format: METADATA_FORMAT,
            job: "job".into(),
            checkpoint: id,
            finished: false,
            completed_at_ms: 0,
            max_parallelism: 128,
            operators: vec![OperatorState {
                name: "op".into(),
                kind: "window_aggregate".into(),
                parallelism: 1,
                subtasks: vec![SubtaskState {
                    subtask: 0,
                    key_groups: KeyGroupRange { start: 0, end: 128 },
                    finished: false,
                    state: serde_json::Value::Null,
                    keyed: Some(KeyedStateHandle {
                        states: Vec::new(),
                        files: files
                            .iter()
                            .map(|f| StoredFile {
                                local: f.to_string(),
                                key: CheckpointStore::shared_key(f),
                                size: 0,
                            })
                            .collect(),
                    }),
                    watermark: None,
                }],
            }],
        }
    }

    #[test]
    fn large_operator_state_is_stored_apart_and_read_back_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(DirStorage::new(dir.path()).unwrap());
        let store = CheckpointStore::new(storage.clone());
        let small = serde_json::json!({"pending": []});
        assert_eq!(
            store_large_state(storage.as_ref(), "chk-0000000001/s.json", small.clone()).unwrap(),
            small
        );
        let table: Vec<(Vec<i64>, i64)> = (0..20_000).map(|i| (vec![i, i * 7], 1)).collect();
        let large = serde_json::json!({ "pending": [], "table": table });
        let reference =
            store_large_state(storage.as_ref(), "chk-0000000001/s.json", large.clone()).unwrap();
        assert_eq!(stored_state_key(&reference), Some("chk-0000000001/s.json"));
        let mut m = metadata(1, &[]);
        m.operators[0].subtasks[0].state = reference;
        store.publish(&m).unwrap();
        let published = std::fs::metadata(dir.path().join("chk-0000000001/_metadata")).unwrap();
        assert!(
            published.len() < INLINE_STATE_BYTES as u64,
            "the metadata stays small"
        );
        assert_eq!(store.load(1).unwrap().operators[0].subtasks[0].state, large);
    }

    #[test]
    fn prune_keeps_the_newest_and_only_the_files_they_use() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(DirStorage::new(dir.path()).unwrap());
        let store = CheckpointStore::new(storage.clone());
        let local = dir.path().join("x.sst");
        std::fs::write(&local, b"sst").unwrap();
        for f in ["a.sst", "b.sst", "c.sst", "d.sst", "orphan.sst"] {
            storage
                .put_file(&CheckpointStore::shared_key(f), &local)
                .unwrap();
        }
        // 1 uses a; 2 uses a, b; 3 uses b, c; 4 uses c, d; 5 never completed.
        for (id, files) in [
            (1, vec!["a.sst"]),
            (2, vec!["a.sst", "b.sst"]),
            (3, vec!["b.sst", "c.sst"]),
            (4, vec!["c.sst", "d.sst"]),
        ] {
            store.publish(&metadata(id, &files)).unwrap();
        }
        storage
            .put_bytes("chk-0000000005/op/MANIFEST", b"m")
            .unwrap();
        store.prune(2).unwrap();
        assert_eq!(store.completed().unwrap(), vec![3, 4]);
        assert_eq!(
            storage.list("shared").unwrap(),
            vec!["b.sst", "c.sst", "d.sst"],
            "a is used by no kept checkpoint, the orphan by none at all"
        );
        assert!(!storage
            .list("")
            .unwrap()
            .contains(&"chk-0000000005".to_string()));
        assert_eq!(store.latest().unwrap().unwrap().checkpoint, 4);
        // Reserved ids survive pruning and count for the next run, and never go down.
        assert_eq!(store.next_id().unwrap(), 5);
        store.reserve(9).unwrap();
        store.reserve(6).unwrap();
        // The restore point of a cluster's next attempt stays, with what it uses, also when
        // newer checkpoints completed.
        storage
            .put_bytes("chk-0000000007/op/MANIFEST", b"m")
            .unwrap();
        store.prune_keeping(1, Some(3)).unwrap();
        assert_eq!(store.completed().unwrap(), vec![3, 4]);
        assert_eq!(
            storage.list("shared").unwrap(),
            vec!["b.sst", "c.sst", "d.sst"]
        );
        assert!(!storage
            .list("")
            .unwrap()
            .contains(&"chk-0000000007".to_string()));
        store.prune(1).unwrap();
        assert_eq!(store.reserved().unwrap(), 9);
        assert_eq!(store.next_id().unwrap(), 10);
        // Damaged metadata is an error that says so, not a panic.
        storage.put_bytes("chk-0000000004/_metadata", b"{").unwrap();
        assert!(matches!(
            store.latest(),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}

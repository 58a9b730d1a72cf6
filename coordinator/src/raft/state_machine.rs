//! The Raft state machine: [`ClusterState`] in memory, made durable by snapshots.
//!
//! The state itself is never written on every apply; instead a snapshot (`snapshot.json`:
//! metadata plus state) is written atomically every so many entries, and on start the node
//! loads it and openraft re-applies the log entries after it. The log keeps everything the
//! snapshot does not cover, so no committed entry is lost.

use super::TypeConfig;
use crate::state::{ClusterState, CommandResult};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The applied state: what [`super::RaftNode::state`] reads.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: ClusterState,
    pub last_applied: Option<LogId<u64>>,
    pub last_membership: StoredMembership<u64, BasicNode>,
}

/// `snapshot.json`: a snapshot's metadata and the state it captured.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    state: ClusterState,
}

/// The latest snapshot, kept in memory to serve to followers. `data` is the JSON of the
/// [`ClusterState`], which is what travels to followers (the metadata travels separately).
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The part shared by the state machine and its snapshot builders.
struct Shared {
    applied: Arc<RwLock<Applied>>,
    /// The latest snapshot. Its lock is held while the file is written, so two snapshots never
    /// race on the file.
    current: Mutex<Option<StoredSnapshot>>,
    dir: PathBuf,
    /// Makes snapshot ids unique within this process's life.
    counter: AtomicU64,
}

/// A [`RaftStateMachine`] over [`ClusterState`]. Cloning shares it; each clone doubles as a
/// snapshot builder.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// The file name of the snapshot inside the raft directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

impl StateMachineStore {
    /// Opens the state machine kept in `dir`: loads `dir/snapshot.json` if present.
    pub fn open(dir: &Path) -> Result<StateMachineStore, std::io::Error> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut applied = Applied::default();
        let mut current = None;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is corrupt: {e}", path.display()),
                    )
                })?;
                tracing::info!(
                    snapshot = %file.meta,
                    "loaded the raft snapshot from {}",
                    path.display()
                );
                let data = serde_json::to_vec(&file.state)?;
                applied = Applied {
                    state: file.state,
                    last_applied: file.meta.last_log_id,
                    last_membership: file.meta.last_membership.clone(),
                };
                current = Some(StoredSnapshot {
                    meta: file.meta,
                    data,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                applied: Arc::new(RwLock::new(applied)),
                current: Mutex::new(current),
                dir: dir.to_path_buf(),
                counter: AtomicU64::new(0),
            }),
        })
    }

    /// The applied state, shared: readers take the read lock briefly.
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.shared.applied.clone()
    }

    fn read_applied(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        // A panic while holding the lock cannot leave `Applied` half-updated in a way that
        // matters more than stopping would, so a poisoned lock is used as is.
        self.shared
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write_applied(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.shared
            .applied
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `snapshot` to `snapshot.json` atomically (temporary file, fsync, rename, fsync of
    /// the directory) and makes it the current snapshot, unless a newer one is already current.
    fn persist(&self, snapshot: StoredSnapshot, state: &ClusterState) -> Result<(), AnyError> {
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(cur) = current.as_ref() {
            if cur.meta.last_log_id > snapshot.meta.last_log_id {
                tracing::debug!(
                    new = %snapshot.meta,
                    current = %cur.meta,
                    "not replacing a newer snapshot"
                );
                return Ok(());
            }
        }
        let file = SnapshotFile {
            meta: snapshot.meta.clone(),
            state: state.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| AnyError::new(&e))?;
        let path = self.shared.dir.join(SNAPSHOT_FILE);
        let tmp = self.shared.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            File::open(&self.shared.dir)?.sync_all()
        };
        write().map_err(|e| {
            AnyError::error(format!("cannot write the snapshot {}: {e}", path.display()))
        })?;
        tracing::info!(snapshot = %snapshot.meta, "wrote the raft snapshot");
        *current = Some(snapshot);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (state, last_applied, last_membership) = {
            let applied = self.read_applied();
            (
                applied.state.clone(),
                applied.last_applied,
                applied.last_membership.clone(),
            )
        };
        let n = self.shared.counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{n}", id.leader_id, id.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let data = serde_json::to_vec(&state)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let snapshot = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.persist(snapshot, &state)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let applied = self.read_applied();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.write_applied();
        let mut results = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => applied.state.apply(&command),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::Done
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        tracing::info!(snapshot = %meta, "installing a snapshot from the leader");
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.persist(
            StoredSnapshot {
                meta: meta.clone(),
                data,
            },
            &state,
        )
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        let mut applied = self.write_applied();
        applied.state = state;
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(current.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

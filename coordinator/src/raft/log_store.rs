//! The Raft log, vote and commit index, persisted in RocksDB.
//!
//! Layout (one default column family, values are JSON):
//! - `e` + big-endian log index: a log entry. Big-endian keeps RocksDB's byte order equal to the
//!   index order, so a forward iterator walks the log in order.
//! - `m:vote`, `m:committed`, `m:purged`: the vote, the last committed log id (a hint that lets a
//!   restarted node re-apply committed entries at once) and the last purged log id.
//!
//! Everything Raft's safety depends on (the vote and appended entries) is written with
//! `sync = true` before openraft is told it is durable.

use super::TypeConfig;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

type StorageResult<T> = Result<T, StorageError<u64>>;

const ENTRY_PREFIX: u8 = b'e';
const VOTE_KEY: &[u8] = b"m:vote";
const COMMITTED_KEY: &[u8] = b"m:committed";
const PURGED_KEY: &[u8] = b"m:purged";

fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The first key after every entry key: the exclusive end of a range covering the whole log.
const ENTRIES_END: [u8; 1] = [ENTRY_PREFIX + 1];

fn index_of(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[0] != ENTRY_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..].try_into().ok()?))
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// A RocksDB-backed [`RaftLogStorage`]. Cloning is cheap (it shares the database), which is how
/// openraft gets its log readers.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    /// Opens (or creates) the log database in directory `path`.
    pub fn open(path: &Path) -> Result<LogStore, rocksdb::Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path)?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.db.get(key).map_err(|e| AnyError::new(&e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AnyError::new(&e)),
        }
    }

    fn put_json<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| AnyError::new(&e))?;
        let opts = if sync {
            synced()
        } else {
            WriteOptions::default()
        };
        self.db
            .put_opt(key, bytes, &opts)
            .map_err(|e| AnyError::new(&e))
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, AnyError> {
        self.get_json(PURGED_KEY)
    }

    /// The id of the last entry in the log, if any entry is present.
    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, AnyError> {
        let end = entry_key(u64::MAX);
        let mut iter = self
            .db
            .iterator(IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(AnyError::new(&e)),
            Some(Ok((key, value))) => {
                if index_of(&key).is_none() {
                    return Ok(None);
                }
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&value).map_err(|e| AnyError::new(&e))?;
                Ok(Some(*entry.get_log_id()))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let from = entry_key(start);
        for item in self
            .db
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let Some(index) = index_of(&key) else { break };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged().map_err(StorageIOError::read_logs)?;
        let last_log_id = self
            .last_entry_id()
            .map_err(StorageIOError::read_logs)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_json(VOTE_KEY, vote, true)
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_json(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    /// The commit index is only a hint (losing it means re-applying later, when the leader says
    /// so), so it is not synced.
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        self.put_json(COMMITTED_KEY, &committed, false)
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        let committed: Option<Option<LogId<u64>>> =
            self.get_json(COMMITTED_KEY).map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(*entry.get_log_id(), &e))?;
            batch.put(entry_key(entry.get_log_id().index), bytes);
        }
        let result = self.db.write_opt(batch, &synced());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    /// Deletes the entries at and after `log_id` (they conflict with the leader's log).
    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        tracing::debug!(%log_id, "truncating the raft log");
        let mut batch = WriteBatch::default();
        batch.delete_range(&entry_key(log_id.index)[..], &ENTRIES_END[..]);
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Deletes the entries up to and including `log_id` (a snapshot covers them). The purge mark
    /// is written first, so a crash in between leaves only unreachable entries behind.
    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        tracing::debug!(%log_id, "purging the raft log");
        self.put_json(PURGED_KEY, &log_id, true)
            .map_err(StorageIOError::write_logs)?;
        let mut batch = WriteBatch::default();
        batch.delete_range(
            &entry_key(0)[..],
            &entry_key(log_id.index.saturating_add(1))[..],
        );
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

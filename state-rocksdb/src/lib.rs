//! Keyed state in RocksDB, with incremental checkpoints.
//!
//! **One RocksDB instance per operator subtask** (as Flink does): a snapshot is one RocksDB
//! checkpoint (hard links, no copy), a restore at the same parallelism is hard links back, and a
//! subtask never contends with another for a lock or a compaction. What instances share is
//! process-wide: the block cache, so memory is bounded by one setting however many subtasks run.
//!
//! **Keys** are `[key group: u16 BE][state id: u16 BE][bincode(key)]`, so one key group is one
//! contiguous range: a rescale copies or drops ranges, never re-hashes. Values are bincode.
//!
//! **A write-back cache in front of RocksDB.** Each state keeps the values it touched, decoded,
//! in a hash map, and writes changed ones to RocksDB (without WAL: the checkpoint is the
//! durability) when the map grows past its limit and at every checkpoint. Hot keys cost a hash
//! lookup, as with the in-memory backend; state larger than the cache lives in RocksDB and its
//! block cache. Map state is stored as one value per key (the whole map: right for the small
//! per-key maps of windows and top-N); list state as one entry per element, so that appending to
//! a long list (a join buffer for a popular key) is a blind write.
//!
//! Timers are kept on the heap (all of them) and persisted at checkpoints, like Flink's
//! `HEAP` timer service with RocksDB.
//!
//! The state traits are infallible (operators cannot handle a disk error in the middle of a
//! record); a RocksDB or decoding error is recorded and reported by [`RocksBackend::take_error`],
//! which the operator wrapper checks after every call, failing the task cleanly.

use eddy_runtime::checkpoint::{
    CheckpointError, CheckpointId, CheckpointStore, KeyedStateHandle, PendingKeyedUpload,
    StateDescriptor, StoredFile, UploadTarget,
};
use eddy_runtime::keygroup::{KeyGroup, KeyGroupRange};
use eddy_runtime::state::{
    update_entry, Key, KeyedStateBackend, ListState, MapKey, MapState, MemoryTimers, StateData,
    TimerState, ValueState,
};
use eddy_runtime::types::Timestamp;
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Why RocksDB state could not be opened, restored or snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("RocksDB at `{path}`: {message}")]
    Rocks { path: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint's files or metadata are damaged.
    #[error("{0}")]
    Corrupt(String),
    /// A write to the database failed earlier (a full disk, a failing device).
    #[error("writing keyed state failed: {0}")]
    Write(String),
}

impl StateError {
    /// Whose fault it is: the disk or RocksDB's I/O (a full disk, a failing device) is
    /// transient; state that does not fit the job (other declared states) is the user's.
    pub fn domain(&self) -> eddy_runtime::error::FaultDomain {
        use eddy_runtime::error::FaultDomain;
        match self {
            StateError::Io { .. } => FaultDomain::Transient,
            StateError::Rocks { message, .. } if message.contains("IO error") => {
                FaultDomain::Transient
            }
            StateError::Rocks { .. } => FaultDomain::Internal,
            StateError::Invalid(_) => FaultDomain::User,
            StateError::Corrupt(_) => FaultDomain::Internal,
            StateError::Write(_) => FaultDomain::Transient,
        }
    }
}

impl From<StateError> for CheckpointError {
    /// Keeps the domain: a transient state error is an I/O error of the checkpoint.
    fn from(e: StateError) -> CheckpointError {
        use eddy_runtime::error::FaultDomain;
        match e.domain() {
            FaultDomain::Transient => CheckpointError::Io {
                context: "keyed state".into(),
                source: std::io::Error::other(e.to_string()),
            },
            FaultDomain::User => CheckpointError::Incompatible(e.to_string()),
            FaultDomain::Internal => CheckpointError::Failed(e.to_string()),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Io { context, source }
}

/// Tuning shared by every RocksDB instance of a process.
#[derive(Clone)]
pub struct RocksOptions {
    /// Decoded entries each state keeps in memory before writing back to RocksDB.
    pub cache_entries: usize,
    /// The block cache all instances share.
    pub block_cache: rocksdb::Cache,
    /// Memtable size per instance.
    pub write_buffer_bytes: usize,
}

impl RocksOptions {
    /// Options with a block cache of `block_cache_bytes` and `cache_entries` per state.
    pub fn new(block_cache_bytes: usize, cache_entries: usize) -> Result<RocksOptions, StateError> {
        let block_cache =
            rocksdb::Cache::new_lru_cache(block_cache_bytes).map_err(|e| StateError::Rocks {
                path: "block cache".into(),
                message: e.to_string(),
            })?;
        Ok(RocksOptions {
            cache_entries: cache_entries.max(1),
            block_cache,
            write_buffer_bytes: 16 << 20,
        })
    }

    fn db_options(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(self.write_buffer_bytes);
        opts.set_max_write_buffer_number(2);
        opts.set_max_background_jobs(1);
        opts.set_keep_log_file_num(2);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        table.set_cache_index_and_filter_blocks(true);
        // Most misses are new keys (a new window, a new auction): a bloom filter answers them
        // without reading data blocks.
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        opts
    }
}

impl std::fmt::Debug for RocksOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksOptions")
            .field("cache_entries", &self.cache_entries)
            .field("write_buffer_bytes", &self.write_buffer_bytes)
            .finish()
    }
}

/// Earlier state to start from: the handles of the old subtasks whose key groups overlap.
pub struct Restore<'a> {
    /// Where the checkpoint's files are.
    pub store: &'a CheckpointStore,
    /// The old subtasks' key-group ranges and handles that overlap the new range.
    pub handles: Vec<(KeyGroupRange, &'a KeyedStateHandle)>,
    /// New checkpoints go to the same storage and may refer to the restored files instead of
    /// storing them again.
    pub reuse_files: bool,
}

/// The database and the error slot that every state of one subtask shares.
struct Db {
    db: DB,
    path: String,
    failed: AtomicBool,
    error: Mutex<Option<StateError>>,
}

impl Db {
    /// Records a value that cannot be decoded (corrupt state: internal).
    fn fail(&self, message: String) {
        self.record(StateError::Corrupt(message));
    }

    /// Records a failed RocksDB read or write (the disk: transient).
    fn fail_storage(&self, message: String) {
        self.record(StateError::Write(message));
    }

    fn record(&self, error: StateError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(error);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Calls `f` with every entry of state `id` in key group `kg`, in key order, while it
    /// returns true. False when `f` stopped it or a read failed (recorded).
    fn scan(&self, kg: KeyGroup, id: u16, mut f: impl FnMut(&[u8], &[u8]) -> bool) -> bool {
        let p = prefix(kg, id);
        for item in self.db.prefix_iterator(p) {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    self.fail_storage(format!("state read failed: {e}"));
                    return false;
                }
            };
            if !k.starts_with(&p) {
                break;
            }
            if !f(&k, &v) {
                return false;
            }
        }
        true
    }

    fn read<U: StateData>(&self, key: &[u8]) -> Option<U> {
        match self.db.get_pinned(key) {
            Ok(Some(bytes)) => decode(&bytes).map_err(|e| self.fail(e)).ok(),
            Ok(None) => None,
            Err(e) => {
                self.fail_storage(format!("read failed: {e}"));
                None
            }
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StateError::Rocks {
                path: self.path.clone(),
                message: format!("write failed: {e}"),
            })
    }
}

const BINCODE: bincode::config::Configuration = bincode::config::standard();

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, BINCODE).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, BINCODE)
        .map(|(v, _)| v)
        .map_err(|e| format!("cannot decode a stored value: {e}"))
}

fn prefix(kg: KeyGroup, id: u16) -> [u8; 4] {
    let kg = (kg as u16).to_be_bytes();
    let id = id.to_be_bytes();
    [kg[0], kg[1], id[0], id[1]]
}

fn state_key(kg: KeyGroup, id: u16, key: &Key) -> Vec<u8> {
    let mut bytes = prefix(kg, id).to_vec();
    bytes.extend_from_slice(&encode(key));
    bytes
}

/// Something that writes its changes into a batch at a checkpoint or eviction.
trait Flush: Send {
    fn flush(&mut self, batch: &mut WriteBatch);
}

/// An entry of a write-back cache, for eviction.
trait Cached {
    /// Cache entries it counts as (a list counts its elements).
    fn size(&self) -> usize;
    /// Whether it was used since the last eviction; clears the mark.
    fn take_used(&mut self) -> bool;
}

/// Writes a cache's changes to RocksDB (an error is recorded for the operator to report).
fn write_back(db: &Db, cache: &mut impl Flush) {
    let mut batch = WriteBatch::default();
    cache.flush(&mut batch);
    if let Err(e) = db.write(batch) {
        db.fail_storage(e.to_string());
    }
}

/// The parts of a write-back cache that eviction changes.
struct CacheParts<'a, S> {
    groups: &'a mut [FxHashMap<Key, S>],
    len: &'a mut usize,
    limit: usize,
    /// Whether the cache holds the whole table (no lookups in RocksDB needed).
    complete: &'a mut bool,
}

/// A table with a write-back cache of slots per key group, evicted when it holds too much.
trait WriteBackCache: Flush + Sized {
    type Slot: Cached;

    fn db(&self) -> Arc<Db>;

    fn cache(&mut self) -> CacheParts<'_, Self::Slot>;

    /// Over its limit, writes every change back to RocksDB and evicts what was not used since
    /// the last eviction; the cache then no longer holds the whole table.
    fn evict_if_full(&mut self) {
        let c = self.cache();
        if *c.len <= c.limit {
            return;
        }
        write_back(&self.db(), self);
        let c = self.cache();
        *c.len = evict(c.groups, c.limit);
        *c.complete = false;
    }
}

/// Second chance (the clock algorithm), after a write-back: keeps the entries used since the
/// last eviction, so hot keys stay decoded; if they are still more than half the cache, drops
/// everything. Returns the size left.
fn evict<S: Cached>(groups: &mut [FxHashMap<Key, S>], limit: usize) -> usize {
    for group in groups.iter_mut() {
        group.retain(|_, slot| slot.take_used());
    }
    let len = cached_size(groups);
    if len <= limit / 2 {
        return len;
    }
    for group in groups.iter_mut() {
        group.clear();
    }
    0
}

fn cached_size<S: Cached>(groups: &[FxHashMap<Key, S>]) -> usize {
    groups.iter().flat_map(|g| g.values()).map(S::size).sum()
}

/// A cached unit: the decoded value of one key, whether it changed since it was last written
/// to RocksDB, and whether RocksDB holds a value for it.
struct Slot<U> {
    value: Option<U>,
    dirty: bool,
    persisted: bool,
    /// Used since the last eviction.
    used: bool,
}

impl<U> Cached for Slot<U> {
    fn size(&self) -> usize {
        1
    }

    fn take_used(&mut self) -> bool {
        std::mem::replace(&mut self.used, false)
    }
}

/// The write-back cache of one state over one RocksDB key space. `U` is what a key holds:
/// a value, a whole map or a whole list.
struct Table<U> {
    id: u16,
    db: Arc<Db>,
    start: KeyGroup,
    groups: Vec<FxHashMap<Key, Slot<U>>>,
    len: usize,
    limit: usize,
    /// The cache holds every key there is (nothing was evicted or restored): a miss is an
    /// absent key, without asking RocksDB.
    complete: bool,
}

impl<U: StateData> Table<U> {
    fn new(id: u16, db: Arc<Db>, range: KeyGroupRange, limit: usize, complete: bool) -> Self {
        Table {
            id,
            db,
            start: range.start,
            groups: (0..range.len()).map(|_| FxHashMap::default()).collect(),
            len: 0,
            limit,
            complete,
        }
    }

    /// A restored table reads its whole key space into the cache when it holds at most half
    /// of it; the cache is then complete, as in a run that never stopped. Without this, every
    /// miss after a restore is a RocksDB lookup, and a restored q7 ran 3x slower per event
    /// than before its crash. A larger table stays cold and is read key by key.
    fn warm_up(&mut self) {
        let budget = self.limit / 2;
        let mut loaded = 0;
        for (i, group) in self.groups.iter_mut().enumerate() {
            let kg = self.start + i as KeyGroup;
            let whole = self.db.scan(kg, self.id, |k, v| {
                loaded += 1;
                let decoded = decode::<Key>(&k[4..]).and_then(|key| Ok((key, decode::<U>(v)?)));
                match decoded {
                    Ok((key, value)) if loaded <= budget => {
                        group.insert(
                            key,
                            Slot {
                                value: Some(value),
                                dirty: false,
                                persisted: true,
                                used: false,
                            },
                        );
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        self.db.fail(e);
                        false
                    }
                }
            });
            if !whole {
                self.groups.iter_mut().for_each(|g| g.clear());
                return;
            }
        }
        self.len = loaded;
        self.complete = true;
    }

    fn slot(&mut self, kg: KeyGroup, key: &Key) -> &mut Slot<U> {
        let i = (kg - self.start) as usize;
        if !self.groups[i].contains_key(key) {
            let value: Option<U> = if self.complete {
                None
            } else {
                self.db.read(&state_key(kg, self.id, key))
            };
            let persisted = value.is_some();
            self.groups[i].insert(
                key.clone(),
                Slot {
                    value,
                    dirty: false,
                    persisted,
                    used: false,
                },
            );
            self.len += 1;
        }
        let slot = self.groups[i].get_mut(key).expect("inserted above");
        slot.used = true;
        slot
    }

    fn read<R>(&mut self, kg: KeyGroup, key: &Key, f: impl FnOnce(Option<&U>) -> R) -> R {
        if self.complete {
            // Every key is cached: a miss is an absent key, with nothing to remember.
            let i = (kg - self.start) as usize;
            return f(self.groups[i].get(key).and_then(|s| s.value.as_ref()));
        }
        let result = f(self.slot(kg, key).value.as_ref());
        self.evict_if_full();
        result
    }

    fn write<R>(&mut self, kg: KeyGroup, key: &Key, f: impl FnOnce(&mut Option<U>) -> R) -> R {
        let slot = self.slot(kg, key);
        let result = f(&mut slot.value);
        slot.dirty = true;
        if slot.value.is_none() && !slot.persisted {
            // Created and emptied since the last write-back: RocksDB never saw it.
            self.groups[(kg - self.start) as usize].remove(key);
            self.len -= 1;
        }
        self.evict_if_full();
        result
    }
}

impl<U: StateData> WriteBackCache for Table<U> {
    type Slot = Slot<U>;

    fn db(&self) -> Arc<Db> {
        Arc::clone(&self.db)
    }

    fn cache(&mut self) -> CacheParts<'_, Slot<U>> {
        CacheParts {
            groups: &mut self.groups,
            len: &mut self.len,
            limit: self.limit,
            complete: &mut self.complete,
        }
    }
}

impl<T: StateData> WriteBackCache for ListTable<T> {
    type Slot = ListSlot<T>;

    fn db(&self) -> Arc<Db> {
        Arc::clone(&self.db)
    }

    fn cache(&mut self) -> CacheParts<'_, ListSlot<T>> {
        CacheParts {
            groups: &mut self.groups,
            len: &mut self.len,
            limit: self.limit,
            complete: &mut self.complete,
        }
    }
}

impl<U: StateData> Flush for Table<U> {
    fn flush(&mut self, batch: &mut WriteBatch) {
        for (i, group) in self.groups.iter_mut().enumerate() {
            let kg = self.start + i as KeyGroup;
            let before = group.len();
            group.retain(|key, slot| {
                if slot.dirty {
                    let k = state_key(kg, self.id, key);
                    match &slot.value {
                        Some(v) => batch.put(k, encode(v)),
                        None => batch.delete(k),
                    }
                    slot.dirty = false;
                    slot.persisted = slot.value.is_some();
                }
                slot.value.is_some()
            });
            self.len -= before - group.len();
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`ValueState`] in RocksDB.
pub struct RocksValueState<T>(Arc<Mutex<Table<T>>>);

impl<T: StateData> ValueState<T> for RocksValueState<T> {
    fn get(&self, kg: KeyGroup, key: &Key) -> Option<T> {
        lock(&self.0).read(kg, key, |v| v.cloned())
    }

    fn update<R>(&mut self, kg: KeyGroup, key: &Key, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        lock(&self.0).write(kg, key, f)
    }

    fn take(&mut self, kg: KeyGroup, key: &Key) -> Option<T> {
        lock(&self.0).write(kg, key, Option::take)
    }
}

/// What a map state keeps per key. Entries hold `Option<V>` so that `update` changes a present
/// value in place, with one lookup (None never stays stored).
type MapUnit<K, V> = BTreeMap<K, Option<V>>;

/// [`MapState`] in RocksDB: the map of a key is one stored value.
pub struct RocksMapState<K, V>(Arc<Mutex<Table<MapUnit<K, V>>>>);

impl<K: MapKey, V: StateData> MapState<K, V> for RocksMapState<K, V> {
    fn get(&self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V> {
        lock(&self.0).read(kg, key, |m| m?.get(map_key)?.clone())
    }

    fn update<R>(
        &mut self,
        kg: KeyGroup,
        key: &Key,
        map_key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        lock(&self.0).write(kg, key, |slot| {
            let map = slot.get_or_insert_with(BTreeMap::new);
            let result = update_entry(map, map_key, f);
            if map.is_empty() {
                *slot = None;
            }
            result
        })
    }

    fn remove(&mut self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V> {
        lock(&self.0).write(kg, key, |slot| {
            let map = slot.as_mut()?;
            let removed = map.remove(map_key).flatten();
            if map.is_empty() {
                *slot = None;
            }
            removed
        })
    }

    fn for_each(&self, kg: KeyGroup, key: &Key, mut f: impl FnMut(&K, &V)) {
        lock(&self.0).read(kg, key, |m| {
            for (k, v) in m.into_iter().flatten() {
                if let Some(v) = v {
                    f(k, v);
                }
            }
        })
    }

    fn clear(&mut self, kg: KeyGroup, key: &Key) {
        lock(&self.0).write(kg, key, |slot| *slot = None)
    }
}

/// The cached part of one key's list.
struct ListSlot<T> {
    /// The elements RocksDB holds, with their sequence numbers, once read (None: not read).
    stored: Option<Vec<(u64, T)>>,
    /// Elements added since the last write-back.
    fresh: Vec<(u64, T)>,
    /// Stored elements removed since the last write-back.
    deleted: Vec<u64>,
    used: bool,
}

/// The elements of one key read so far while warming a list table up.
struct KeyRun<T> {
    /// The key as stored (`[prefix][encoded key]`).
    bytes: Vec<u8>,
    key: Key,
    items: Vec<(u64, T)>,
}

impl<T> ListSlot<T> {
    /// A key's list as RocksDB holds it.
    fn stored(items: Vec<(u64, T)>) -> ListSlot<T> {
        ListSlot {
            stored: Some(items),
            fresh: Vec::new(),
            deleted: Vec::new(),
            used: false,
        }
    }
}

impl<T> Cached for ListSlot<T> {
    fn size(&self) -> usize {
        1 + self.stored.as_ref().map_or(0, Vec::len) + self.fresh.len()
    }

    fn take_used(&mut self) -> bool {
        std::mem::replace(&mut self.used, false)
    }
}

/// List state with one RocksDB entry per element, `[state key][sequence: u64 BE]`: an `add` is a
/// blind write (no read, no re-encoding of the list), so long lists (a regular join's buffer for
/// a popular key) cost what they add, not what they hold.
struct ListTable<T> {
    id: u16,
    db: Arc<Db>,
    start: KeyGroup,
    groups: Vec<FxHashMap<Key, ListSlot<T>>>,
    /// Cached elements and slots.
    len: usize,
    limit: usize,
    complete: bool,
    /// Sequence numbers order elements by insertion, also across runs: they start from the
    /// clock (microseconds x 1024) and count up.
    next_seq: u64,
}

impl<T: StateData> ListTable<T> {
    /// As [`Table::warm_up`], for lists: every element of every key when they fit in half the
    /// cache.
    fn warm_up(&mut self) {
        let budget = self.limit / 2;
        let mut loaded = 0;
        for (i, group) in self.groups.iter_mut().enumerate() {
            let kg = self.start + i as KeyGroup;
            // Elements of one key are adjacent: `[state key][sequence]`.
            let mut current: Option<KeyRun<T>> = None;
            let whole = self.db.scan(kg, self.id, |k, v| {
                let Some(split) = k.len().checked_sub(8).filter(|s| *s > 4) else {
                    self.db
                        .fail("a list element without a sequence number".into());
                    return false;
                };
                let (key_bytes, seq) = k.split_at(split);
                let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                let item = match decode::<T>(v) {
                    Ok(item) => item,
                    Err(e) => {
                        self.db.fail(e);
                        return false;
                    }
                };
                if current.as_ref().is_none_or(|run| run.bytes != key_bytes) {
                    let key = match decode::<Key>(&key_bytes[4..]) {
                        Ok(key) => key,
                        Err(e) => {
                            self.db.fail(e);
                            return false;
                        }
                    };
                    let next = KeyRun {
                        bytes: key_bytes.to_vec(),
                        key,
                        items: Vec::new(),
                    };
                    if let Some(run) = current.replace(next) {
                        group.insert(run.key, ListSlot::stored(run.items));
                    }
                    loaded += 1;
                }
                current.as_mut().expect("set above").items.push((seq, item));
                loaded += 1;
                loaded <= budget
            });
            if !whole {
                self.groups.iter_mut().for_each(|g| g.clear());
                return;
            }
            if let Some(run) = current {
                group.insert(run.key, ListSlot::stored(run.items));
            }
        }
        self.len = loaded;
        self.complete = true;
    }

    fn slot(&mut self, kg: KeyGroup, key: &Key, load: bool) -> &mut ListSlot<T> {
        let i = (kg - self.start) as usize;
        if !self.groups[i].contains_key(key) {
            self.groups[i].insert(
                key.clone(),
                ListSlot {
                    stored: self.complete.then(Vec::new),
                    fresh: Vec::new(),
                    deleted: Vec::new(),
                    used: false,
                },
            );
            self.len += 1;
        }
        let needs_load = load && self.groups[i][key].stored.is_none();
        if needs_load {
            let prefix = state_key(kg, self.id, key);
            let mut items = Vec::new();
            for entry in self
                .db
                .db
                .iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward))
            {
                let (k, v) = match entry {
                    Ok(kv) => kv,
                    Err(e) => {
                        self.db.fail_storage(format!("list read failed: {e}"));
                        break;
                    }
                };
                if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                    break;
                }
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&k[prefix.len()..]);
                match decode::<T>(&v) {
                    Ok(item) => items.push((u64::from_be_bytes(seq), item)),
                    Err(e) => self.db.fail(e),
                }
            }
            let slot = self.groups[i].get_mut(key).expect("inserted above");
            items.retain(|(seq, _)| !slot.deleted.contains(seq));
            self.len += items.len();
            slot.stored = Some(items);
        }
        let slot = self.groups[i].get_mut(key).expect("inserted above");
        slot.used = true;
        slot
    }
}

impl<T: StateData> Flush for ListTable<T> {
    fn flush(&mut self, batch: &mut WriteBatch) {
        for (i, group) in self.groups.iter_mut().enumerate() {
            let kg = self.start + i as KeyGroup;
            group.retain(|key, slot| {
                let prefix = state_key(kg, self.id, key);
                let entry = |seq: u64| {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&seq.to_be_bytes());
                    k
                };
                for seq in slot.deleted.drain(..) {
                    batch.delete(entry(seq));
                }
                for (seq, item) in &slot.fresh {
                    batch.put(entry(*seq), encode(item));
                }
                let fresh = std::mem::take(&mut slot.fresh);
                match &mut slot.stored {
                    Some(stored) => {
                        stored.extend(fresh);
                        !stored.is_empty()
                    }
                    None => false,
                }
            });
        }
        self.len = cached_size(&self.groups);
    }
}

/// [`ListState`] in RocksDB: one entry per element.
pub struct RocksListState<T>(Arc<Mutex<ListTable<T>>>);

impl<T: StateData> ListState<T> for RocksListState<T> {
    fn add(&mut self, kg: KeyGroup, key: &Key, value: T) {
        let mut t = lock(&self.0);
        t.next_seq += 1;
        let seq = t.next_seq;
        t.slot(kg, key, false).fresh.push((seq, value));
        t.len += 1;
        t.evict_if_full();
    }

    fn for_each(&self, kg: KeyGroup, key: &Key, mut f: impl FnMut(&T)) {
        let mut t = lock(&self.0);
        if t.complete && !t.groups[(kg - t.start) as usize].contains_key(key) {
            return;
        }
        let slot = t.slot(kg, key, true);
        for (_, item) in slot.stored.iter().flatten().chain(&slot.fresh) {
            f(item);
        }
        t.evict_if_full();
    }

    fn retain(&mut self, kg: KeyGroup, key: &Key, mut keep: impl FnMut(&T) -> bool) {
        let mut t = lock(&self.0);
        if t.complete && !t.groups[(kg - t.start) as usize].contains_key(key) {
            return;
        }
        let slot = t.slot(kg, key, true);
        let before = slot.size();
        let ListSlot {
            stored,
            fresh,
            deleted,
            ..
        } = slot;
        if let Some(stored) = stored {
            stored.retain(|(seq, item)| {
                let k = keep(item);
                if !k {
                    deleted.push(*seq);
                }
                k
            });
        }
        fresh.retain(|(_, item)| keep(item));
        let after = slot.size();
        t.len -= before - after;
        t.evict_if_full();
    }

    fn clear(&mut self, kg: KeyGroup, key: &Key) {
        self.retain(kg, key, |_| false)
    }
}

/// Timer keys sort by time within a key group: the time's bits with the sign flipped.
fn timer_key(time: Timestamp, kg: KeyGroup, id: u16, key: &Key) -> Vec<u8> {
    let mut bytes = prefix(kg, id).to_vec();
    bytes.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    bytes.extend_from_slice(&encode(key));
    bytes
}

/// Timers on the heap, written to RocksDB whole at every checkpoint (as Flink's heap timers
/// are): registering and firing one costs what it costs in memory, and a checkpoint pays for
/// the timers pending at that moment, which window and join operators keep few of.
struct TimerTable {
    id: u16,
    range: KeyGroupRange,
    timers: MemoryTimers,
    /// Timers changed since the last write (nothing to write otherwise).
    changed: bool,
}

impl Flush for TimerTable {
    fn flush(&mut self, batch: &mut WriteBatch) {
        if !self.changed {
            return;
        }
        self.changed = false;
        for kg in self.range.start..self.range.end {
            // State ids are declaration indices, far below u16::MAX.
            batch.delete_range(prefix(kg, self.id), prefix(kg, self.id + 1));
        }
        self.timers.for_each(|time, kg, key| {
            batch.put(timer_key(time, kg, self.id, key), []);
        });
    }
}

/// [`TimerState`] of the [`RocksBackend`].
pub struct RocksTimers(Arc<Mutex<TimerTable>>);

impl TimerState for RocksTimers {
    fn register(&mut self, time: Timestamp, kg: KeyGroup, key: &Key) {
        let mut t = lock(&self.0);
        t.changed |= t.timers.insert(time, kg, key);
    }

    fn delete(&mut self, time: Timestamp, _kg: KeyGroup, key: &Key) {
        let mut t = lock(&self.0);
        t.changed |= t.timers.remove(time, key);
    }

    fn pop_due(&mut self, watermark: Timestamp) -> Vec<(Timestamp, KeyGroup, Key)> {
        let mut t = lock(&self.0);
        let due = t.timers.pop_due(watermark);
        t.changed |= !due.is_empty();
        due
    }
}

/// The keyed state of one operator subtask in its own RocksDB instance.
#[derive(Clone)]
pub struct RocksBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Db>,
    range: KeyGroupRange,
    dir: PathBuf,
    /// Names this subtask's files in checkpoint storage.
    owner: String,
    cache_entries: usize,
    /// The database was restored: caches start incomplete.
    restored: Option<Vec<StateDescriptor>>,
    declared: Mutex<Vec<StateDescriptor>>,
    tables: Mutex<Vec<Arc<Mutex<dyn Flush>>>>,
    /// SST files already in checkpoint storage: local name -> storage key.
    uploaded: Arc<Mutex<HashMap<String, String>>>,
}

/// A name unique to this process run, so that shared files of different runs never collide.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

fn rocks_error(path: &Path, e: rocksdb::Error) -> StateError {
    StateError::Rocks {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl RocksBackend {
    /// Opens the state of subtask `owner` (owning `range`) in `dir`, empty or from `restore`.
    /// Whatever `dir` held before is discarded: local state is a cache of the checkpoint.
    pub fn open(
        dir: &Path,
        owner: &str,
        range: KeyGroupRange,
        options: &RocksOptions,
        restore: Option<Restore<'_>>,
    ) -> Result<RocksBackend, StateError> {
        if range.end > u16::MAX as u32 + 1 {
            return Err(StateError::Invalid(format!(
                "max parallelism above {} is not supported by RocksDB state",
                u16::MAX as u32 + 1
            )));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(io(format!("cannot clear `{}`", dir.display())))?;
        }
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create `{}`", dir.display())))?;
        let db_path = dir.join("db");
        let opts = options.db_options();
        let mut uploaded = HashMap::new();
        let mut restored = None;
        let db = match restore {
            Some(r) if !r.handles.is_empty() => {
                let states = r.handles[0].1.states.clone();
                if let Some((_, h)) = r.handles.iter().find(|(_, h)| h.states != states) {
                    return Err(StateError::Corrupt(format!(
                        "the checkpoint's subtasks disagree on the declared states ({:?} vs {:?})",
                        states, h.states
                    )));
                }
                restored = Some(states);
                if let [(old, handle)] = r.handles.as_slice() {
                    if *old == range {
                        // Same key groups: the files are the database, hard-linked back.
                        materialise(r.store, handle, &db_path)?;
                        for f in handle.files.iter().filter(|_| r.reuse_files) {
                            if f.local.ends_with(".sst") {
                                uploaded.insert(f.local.clone(), f.key.clone());
                            }
                        }
                        DB::open(&opts, &db_path).map_err(|e| rocks_error(&db_path, e))?
                    } else {
                        rescale(r.store, &r.handles, range, &opts, dir, &db_path)?
                    }
                } else {
                    rescale(r.store, &r.handles, range, &opts, dir, &db_path)?
                }
            }
            _ => DB::open(&opts, &db_path).map_err(|e| rocks_error(&db_path, e))?,
        };
        Ok(RocksBackend {
            inner: Arc::new(Inner {
                db: Arc::new(Db {
                    db,
                    path: db_path.display().to_string(),
                    failed: AtomicBool::new(false),
                    error: Mutex::new(None),
                }),
                range,
                dir: dir.to_path_buf(),
                owner: owner.to_string(),
                cache_entries: options.cache_entries,
                restored,
                declared: Mutex::default(),
                tables: Mutex::default(),
                uploaded: Arc::new(Mutex::new(uploaded)),
            }),
        })
    }

    /// The first storage error since the last call, if any.
    pub fn take_error(&self) -> Option<StateError> {
        let db = &self.inner.db;
        if !db.failed.load(Ordering::Relaxed) {
            return None;
        }
        db.failed.store(false, Ordering::Relaxed);
        lock(&db.error).take()
    }

    /// Checks that the operator declared the same states, with the same types, as the one that
    /// wrote the restored checkpoint. Call after the operator is built.
    pub fn check_restored_states(&self) -> Result<(), String> {
        let Some(restored) = &self.inner.restored else {
            return Ok(());
        };
        let declared = lock(&self.inner.declared);
        for (i, old) in restored.iter().enumerate() {
            match declared.get(i) {
                Some(new) if new == old => {}
                Some(new) => {
                    return Err(format!(
                        "its state #{i} was `{}` ({} of {}) in the checkpoint but is `{}` ({} of {}) now",
                        old.name, old.kind, old.types, new.name, new.kind, new.types
                    ))
                }
                None => {
                    return Err(format!(
                        "the checkpoint holds state `{}` ({} of {}) that it no longer has",
                        old.name, old.kind, old.types
                    ))
                }
            }
        }
        if let Some(new) = declared.get(restored.len()) {
            return Err(format!(
                "it has state `{}` ({} of {}) that the checkpoint lacks",
                new.name, new.kind, new.types
            ));
        }
        Ok(())
    }

    fn declare(&self, name: &str, kind: &str, types: String) -> u16 {
        let mut declared = lock(&self.inner.declared);
        declared.push(StateDescriptor {
            name: name.to_string(),
            kind: kind.to_string(),
            types,
        });
        (declared.len() - 1) as u16
    }

    fn table<U: StateData>(&self, id: u16) -> Arc<Mutex<Table<U>>> {
        let mut table = Table::new(
            id,
            Arc::clone(&self.inner.db),
            self.inner.range,
            self.inner.cache_entries,
            self.inner.restored.is_none(),
        );
        if !table.complete {
            table.warm_up();
        }
        let table = Arc::new(Mutex::new(table));
        lock(&self.inner.tables).push(table.clone());
        table
    }

    /// The synchronous part of a snapshot: writes every cached change to RocksDB and takes a
    /// RocksDB checkpoint (a flush and hard links). The returned upload copies the files that
    /// checkpoint storage does not have yet.
    pub fn snapshot(&self, checkpoint: CheckpointId) -> Result<PendingKeyedUpload, StateError> {
        let inner = &self.inner;
        let mut batch = WriteBatch::default();
        for table in lock(&inner.tables).iter() {
            lock(table).flush(&mut batch);
        }
        inner.db.write(batch)?;
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        let local = inner.dir.join(format!("chk-{checkpoint}"));
        if local.exists() {
            std::fs::remove_dir_all(&local)
                .map_err(io(format!("cannot clear `{}`", local.display())))?;
        }
        rocksdb::checkpoint::Checkpoint::new(&inner.db.db)
            .and_then(|c| c.create_checkpoint(&local))
            .map_err(|e| rocks_error(&local, e))?;
        let owner = inner.owner.clone();
        let states = lock(&inner.declared).clone();
        let uploaded = Arc::clone(&inner.uploaded);
        Ok(Box::new(move |target: &UploadTarget| {
            let result = upload(&local, &owner, states, &uploaded, target);
            let _ = std::fs::remove_dir_all(&local);
            result.map_err(CheckpointError::from)
        }))
    }
}

/// Copies a local RocksDB checkpoint into checkpoint storage, skipping SST files that earlier
/// checkpoints of this subtask already stored (incremental checkpoints).
fn upload(
    local: &Path,
    owner: &str,
    states: Vec<StateDescriptor>,
    uploaded: &Mutex<HashMap<String, String>>,
    target: &UploadTarget,
) -> Result<KeyedStateHandle, StateError> {
    eddy_runtime::faults::check(eddy_runtime::faults::Site::State)
        .map_err(io(format!("cannot read `{}`", local.display())))?;
    let mut names: Vec<String> = std::fs::read_dir(local)
        .map_err(io(format!("cannot list `{}`", local.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let storage = target.store.storage();
    let mut previous = lock(uploaded);
    let mut now: HashMap<String, String> = HashMap::new();
    let mut files = Vec::with_capacity(names.len());
    let run = run_id();
    for name in names {
        let path = local.join(&name);
        let size = std::fs::metadata(&path)
            .map_err(io(format!("cannot read `{}`", path.display())))?
            .len();
        let key = if name.ends_with(".sst") {
            match previous.get(&name).filter(|_| target.incremental) {
                Some(key) => key.clone(),
                None => {
                    let key = CheckpointStore::shared_key(&format!("{owner}-{run}-{name}"));
                    storage.put_file(&key, &path).map_err(io(format!(
                        "cannot store `{key}` in {}",
                        storage.describe()
                    )))?;
                    key
                }
            }
        } else {
            let key = CheckpointStore::private_key(target.checkpoint, owner, &name);
            storage.put_file(&key, &path).map_err(io(format!(
                "cannot store `{key}` in {}",
                storage.describe()
            )))?;
            key
        };
        if name.ends_with(".sst") {
            now.insert(name.clone(), key.clone());
        }
        files.push(StoredFile {
            local: name,
            key,
            size,
        });
    }
    if target.incremental {
        *previous = now;
    }
    Ok(KeyedStateHandle { states, files })
}

/// Fetches the files of a handle into `dir`, ready to open as a database.
fn materialise(
    store: &CheckpointStore,
    handle: &KeyedStateHandle,
    dir: &Path,
) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create `{}`", dir.display())))?;
    for f in &handle.files {
        // A file name from the checkpoint's metadata: a plain name inside `dir`, never a path
        // that leaves it.
        let plain = !f.local.is_empty()
            && !f.local.contains(['/', '\\'])
            && f.local != "."
            && f.local != "..";
        if !plain {
            return Err(StateError::Corrupt(format!(
                "the checkpoint in {} is corrupt: `{}` is not a file name",
                store.storage().describe(),
                f.local
            )));
        }
        let dest = dir.join(&f.local);
        let context = || {
            format!(
                "cannot fetch `{}` from {} (the checkpoint is incomplete or was deleted)",
                f.key,
                store.storage().describe()
            )
        };
        if f.local.ends_with(".sst") {
            // Immutable: a hard link where the storage allows it.
            store
                .storage()
                .get_file(&f.key, &dest)
                .map_err(io(context()))?;
        } else {
            // MANIFEST, CURRENT, OPTIONS, WAL: RocksDB may write to these once the database is
            // open, which must never reach the checkpoint's copy, so they are copied.
            let bytes = store.storage().get_bytes(&f.key).map_err(io(context()))?;
            std::fs::write(&dest, bytes)
                .map_err(io(format!("cannot write `{}`", dest.display())))?;
        }
    }
    Ok(())
}

/// Builds the database of a new key-group range from the old subtasks' databases, copying the
/// key groups that now belong here.
fn rescale(
    store: &CheckpointStore,
    handles: &[(KeyGroupRange, &KeyedStateHandle)],
    range: KeyGroupRange,
    opts: &Options,
    dir: &Path,
    db_path: &Path,
) -> Result<DB, StateError> {
    let db = DB::open(opts, db_path).map_err(|e| rocks_error(db_path, e))?;
    for (i, (old, handle)) in handles.iter().enumerate() {
        let start = old.start.max(range.start);
        let end = old.end.min(range.end);
        if start >= end {
            continue;
        }
        let tmp = dir.join(format!("restore-{i}"));
        materialise(store, handle, &tmp)?;
        {
            let old_db =
                DB::open_for_read_only(opts, &tmp, false).map_err(|e| rocks_error(&tmp, e))?;
            let from = (start as u16).to_be_bytes();
            let mut batch = WriteBatch::default();
            let iter = old_db.iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
            for item in iter {
                let (k, v) = item.map_err(|e| rocks_error(&tmp, e))?;
                let [hi, lo, ..] = *k else {
                    return Err(StateError::Corrupt(format!(
                        "the checkpointed state at `{}` is corrupt: a key shorter than its key group prefix",
                        tmp.display()
                    )));
                };
                let kg = u16::from_be_bytes([hi, lo]) as u32;
                if kg >= end {
                    break;
                }
                batch.put(k, v);
                if batch.len() >= 10_000 {
                    write_batch(&db, std::mem::take(&mut batch), db_path)?;
                }
            }
            write_batch(&db, batch, db_path)?;
        }
        std::fs::remove_dir_all(&tmp).map_err(io(format!("cannot remove `{}`", tmp.display())))?;
    }
    Ok(db)
}

fn write_batch(db: &DB, batch: WriteBatch, path: &Path) -> Result<(), StateError> {
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    db.write_opt(batch, &opts).map_err(|e| rocks_error(path, e))
}

impl KeyedStateBackend for RocksBackend {
    type Value<T: StateData> = RocksValueState<T>;
    type Map<K: MapKey, V: StateData> = RocksMapState<K, V>;
    type List<T: StateData> = RocksListState<T>;
    type Timers = RocksTimers;

    fn key_groups(&self) -> KeyGroupRange {
        self.inner.range
    }

    fn value_state<T: StateData>(&mut self, name: &str) -> Self::Value<T> {
        let id = self.declare(name, "value", std::any::type_name::<T>().to_string());
        RocksValueState(self.table(id))
    }

    fn map_state<K: MapKey, V: StateData>(&mut self, name: &str) -> Self::Map<K, V> {
        let types = format!(
            "{} -> {}",
            std::any::type_name::<K>(),
            std::any::type_name::<V>()
        );
        let id = self.declare(name, "map", types);
        RocksMapState(self.table(id))
    }

    fn list_state<T: StateData>(&mut self, name: &str) -> Self::List<T> {
        let id = self.declare(name, "list", std::any::type_name::<T>().to_string());
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut table = ListTable {
            id,
            db: Arc::clone(&self.inner.db),
            start: self.inner.range.start,
            groups: (0..self.inner.range.len())
                .map(|_| FxHashMap::default())
                .collect(),
            len: 0,
            limit: self.inner.cache_entries,
            complete: self.inner.restored.is_none(),
            next_seq: micros << 10,
        };
        if !table.complete {
            table.warm_up();
        }
        let table = Arc::new(Mutex::new(table));
        lock(&self.inner.tables).push(table.clone());
        RocksListState(table)
    }

    fn timers(&mut self, name: &str) -> Self::Timers {
        let id = self.declare(name, "timers", "timestamp".to_string());
        let mut timers = MemoryTimers::default();
        if self.inner.restored.is_some() {
            let db = &self.inner.db;
            for kg in self.inner.range.start..self.inner.range.end {
                db.scan(kg, id, |k, _| {
                    let Some(time) = k.get(4..12) else {
                        db.fail("a timer without a time".into());
                        return false;
                    };
                    let time = u64::from_be_bytes(time.try_into().expect("8 bytes"));
                    match decode::<Key>(&k[12..]) {
                        Ok(key) => timers.register((time ^ (1 << 63)) as Timestamp, kg, &key),
                        Err(e) => db.fail(e),
                    }
                    true
                });
            }
        }
        let table = Arc::new(Mutex::new(TimerTable {
            id,
            range: self.inner.range,
            timers,
            changed: false,
        }));
        lock(&self.inner.tables).push(table.clone());
        RocksTimers(table)
    }
}

#[cfg(test)]
mod tests;

//! Keyed state: the small backend trait every stateful operator goes through.
//!
//! State is addressed by (key group, key) so that a backend can move or drop whole key-group
//! ranges when a job is rescaled. Three shapes cover the operators: a value per key, an ordered map
//! per key (windows by end time, distinct sets) and a list per key (join buffers). Access is by
//! closure (`update`, `for_each`) so that an in-memory backend works in place while a serialising
//! backend (RocksDB, next) can decode, call and encode without exposing references into storage.
//!
//! Operators are generic over [`KeyedStateBackend`]; the choice is made once when tasks are built,
//! so the hot path has no dynamic dispatch.

use crate::keygroup::{KeyGroup, KeyGroupRange};
use crate::types::{Timestamp, Value};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

/// A grouping or partition key: the values of the key columns.
pub type Key = Vec<Value>;

/// What can be kept in state: cloneable, sendable and serialisable (for snapshots and RocksDB).
pub trait StateData: Clone + Send + 'static + Serialize + DeserializeOwned {}
impl<T: Clone + Send + 'static + Serialize + DeserializeOwned> StateData for T {}

/// What can key a map state: also ordered, so iteration order is the same in every backend.
pub trait MapKey: StateData + Ord {}
impl<T: StateData + Ord> MapKey for T {}

/// One value per key.
pub trait ValueState<T: StateData>: Send {
    /// A copy of the value.
    fn get(&self, kg: KeyGroup, key: &Key) -> Option<T>;
    /// Reads, changes and writes back the value in one step; `None` in the slot after `f` deletes it.
    fn update<R>(&mut self, kg: KeyGroup, key: &Key, f: impl FnOnce(&mut Option<T>) -> R) -> R;
    /// Removes and returns the value.
    fn take(&mut self, kg: KeyGroup, key: &Key) -> Option<T>;
}

/// An ordered map per key.
pub trait MapState<K: MapKey, V: StateData>: Send {
    fn get(&self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V>;
    /// Reads, changes and writes back one entry; `None` after `f` deletes it.
    fn update<R>(
        &mut self,
        kg: KeyGroup,
        key: &Key,
        map_key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> R;
    fn remove(&mut self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V>;
    /// Visits the entries of one key in map-key order.
    fn for_each(&self, kg: KeyGroup, key: &Key, f: impl FnMut(&K, &V));
    /// Removes every entry of one key.
    fn clear(&mut self, kg: KeyGroup, key: &Key);
}

/// An append-mostly list per key.
pub trait ListState<T: StateData>: Send {
    fn add(&mut self, kg: KeyGroup, key: &Key, value: T);
    /// Visits the elements of one key in insertion order.
    fn for_each(&self, kg: KeyGroup, key: &Key, f: impl FnMut(&T));
    /// Keeps only the elements for which `keep` is true.
    fn retain(&mut self, kg: KeyGroup, key: &Key, keep: impl FnMut(&T) -> bool);
    fn clear(&mut self, kg: KeyGroup, key: &Key);
}

/// Event-time timers per key: the operator asks to be called back when the watermark passes a
/// time, for a key (window ends, join state expiry). Registering the same (time, key) twice
/// fires once.
pub trait TimerState: Send {
    fn register(&mut self, time: Timestamp, kg: KeyGroup, key: &Key);
    fn delete(&mut self, time: Timestamp, kg: KeyGroup, key: &Key);
    /// Removes and returns the timers at or before `watermark`, earliest first.
    fn pop_due(&mut self, watermark: Timestamp) -> Vec<(Timestamp, KeyGroup, Key)>;
}

/// Creates the keyed states of one operator subtask, which owns the key groups in `range`.
pub trait KeyedStateBackend: Send + 'static {
    type Value<T: StateData>: ValueState<T>;
    type Map<K: MapKey, V: StateData>: MapState<K, V>;
    type List<T: StateData>: ListState<T>;
    type Timers: TimerState;

    /// The key groups this backend holds.
    fn key_groups(&self) -> KeyGroupRange;
    /// The value state called `name` (names are unique per operator).
    fn value_state<T: StateData>(&mut self, name: &str) -> Self::Value<T>;
    fn map_state<K: MapKey, V: StateData>(&mut self, name: &str) -> Self::Map<K, V>;
    fn list_state<T: StateData>(&mut self, name: &str) -> Self::List<T>;
    fn timers(&mut self, name: &str) -> Self::Timers;
}

// ---- the in-memory backend ---------------------------------------------------------------------

/// Keeps state in hash maps on the heap, one map per key group: fast, bounded by memory, and
/// lost on a crash. The default without checkpointing, and the reference the other backends are
/// tested against.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    range: KeyGroupRange,
}

impl MemoryBackend {
    pub fn new(range: KeyGroupRange) -> MemoryBackend {
        MemoryBackend { range }
    }
}

/// Per-key-group hash maps, so a key-group range can be split off or dropped as a whole.
#[derive(Debug)]
struct Partitioned<K, V> {
    start: KeyGroup,
    groups: Vec<FxHashMap<K, V>>,
}

impl<K: Hash + Eq, V> Partitioned<K, V> {
    fn new(range: KeyGroupRange) -> Self {
        Partitioned {
            start: range.start,
            groups: (0..range.len()).map(|_| FxHashMap::default()).collect(),
        }
    }

    /// The map of a key group. A key group outside the range means the exchange routed a key
    /// to the wrong subtask, a bug that must not silently corrupt state.
    fn group(&self, kg: KeyGroup) -> &FxHashMap<K, V> {
        &self.groups[(kg - self.start) as usize]
    }

    fn group_mut(&mut self, kg: KeyGroup) -> &mut FxHashMap<K, V> {
        &mut self.groups[(kg - self.start) as usize]
    }
}

/// [`ValueState`] of the [`MemoryBackend`]. Slots hold `Option<T>` so that `update` finds and
/// changes a value with a single hash lookup.
pub struct MemoryValueState<T> {
    data: Partitioned<Key, Option<T>>,
}

impl<T: StateData> ValueState<T> for MemoryValueState<T> {
    fn get(&self, kg: KeyGroup, key: &Key) -> Option<T> {
        self.data.group(kg).get(key).and_then(|slot| slot.clone())
    }

    fn update<R>(&mut self, kg: KeyGroup, key: &Key, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        let group = self.data.group_mut(kg);
        if let Some(slot) = group.get_mut(key) {
            let result = f(slot);
            if slot.is_none() {
                group.remove(key);
            }
            return result;
        }
        let mut slot = None;
        let result = f(&mut slot);
        if slot.is_some() {
            group.insert(key.clone(), slot);
        }
        result
    }

    fn take(&mut self, kg: KeyGroup, key: &Key) -> Option<T> {
        self.data.group_mut(kg).remove(key).flatten()
    }
}

/// Changes entry `k` of a map whose entries hold `Option<V>`: in place when present (one
/// lookup), inserted when `f` fills an absent one, removed when `f` empties it, so None never
/// stays stored. The map states of every backend keep their per-key maps this way.
pub fn update_entry<K: Ord + Clone, V, R>(
    map: &mut BTreeMap<K, Option<V>>,
    k: &K,
    f: impl FnOnce(&mut Option<V>) -> R,
) -> R {
    if let Some(slot) = map.get_mut(k) {
        let result = f(slot);
        if slot.is_none() {
            map.remove(k);
        }
        return result;
    }
    let mut slot = None;
    let result = f(&mut slot);
    if slot.is_some() {
        map.insert(k.clone(), slot);
    }
    result
}

/// [`MapState`] of the [`MemoryBackend`]. Entries hold `Option<V>` so that `update` changes a
/// present value in place with one lookup (None never stays stored).
pub struct MemoryMapState<K, V> {
    data: Partitioned<Key, BTreeMap<K, Option<V>>>,
}

impl<K: MapKey, V: StateData> MapState<K, V> for MemoryMapState<K, V> {
    fn get(&self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V> {
        self.data.group(kg).get(key)?.get(map_key)?.clone()
    }

    fn update<R>(
        &mut self,
        kg: KeyGroup,
        key: &Key,
        map_key: &K,
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> R {
        let group = self.data.group_mut(kg);
        let map = match group.get_mut(key) {
            Some(map) => map,
            None => group.entry(key.clone()).or_default(),
        };
        let result = update_entry(map, map_key, f);
        if map.is_empty() {
            group.remove(key);
        }
        result
    }

    fn remove(&mut self, kg: KeyGroup, key: &Key, map_key: &K) -> Option<V> {
        let group = self.data.group_mut(kg);
        let map = group.get_mut(key)?;
        let removed = map.remove(map_key).flatten();
        if map.is_empty() {
            group.remove(key);
        }
        removed
    }

    fn for_each(&self, kg: KeyGroup, key: &Key, mut f: impl FnMut(&K, &V)) {
        if let Some(map) = self.data.group(kg).get(key) {
            for (k, v) in map {
                if let Some(v) = v {
                    f(k, v);
                }
            }
        }
    }

    fn clear(&mut self, kg: KeyGroup, key: &Key) {
        self.data.group_mut(kg).remove(key);
    }
}

/// [`ListState`] of the [`MemoryBackend`].
pub struct MemoryListState<T> {
    data: Partitioned<Key, Vec<T>>,
}

impl<T: StateData> ListState<T> for MemoryListState<T> {
    fn add(&mut self, kg: KeyGroup, key: &Key, value: T) {
        let group = self.data.group_mut(kg);
        match group.get_mut(key) {
            Some(list) => list.push(value),
            None => {
                group.insert(key.clone(), vec![value]);
            }
        }
    }

    fn for_each(&self, kg: KeyGroup, key: &Key, mut f: impl FnMut(&T)) {
        if let Some(list) = self.data.group(kg).get(key) {
            list.iter().for_each(&mut f);
        }
    }

    fn retain(&mut self, kg: KeyGroup, key: &Key, keep: impl FnMut(&T) -> bool) {
        let group = self.data.group_mut(kg);
        if let Some(list) = group.get_mut(key) {
            list.retain(keep);
            if list.is_empty() {
                group.remove(key);
            }
        }
    }

    fn clear(&mut self, kg: KeyGroup, key: &Key) {
        self.data.group_mut(kg).remove(key);
    }
}

/// [`TimerState`] of the [`MemoryBackend`]: timers ordered by time, de-duplicated per key.
#[derive(Default)]
pub struct MemoryTimers {
    by_time: BTreeMap<Timestamp, Vec<(KeyGroup, Key)>>,
    registered: FxHashSet<(Timestamp, Key)>,
    /// Deleted timers still in `by_time`, skipped when they come due.
    deleted: BTreeSet<Timestamp>,
}

impl MemoryTimers {
    /// Registers a timer; false if it was registered already (so a persisting backend writes
    /// only new timers).
    pub fn insert(&mut self, time: Timestamp, kg: KeyGroup, key: &Key) -> bool {
        let new = self.registered.insert((time, key.clone()));
        if new {
            self.by_time
                .entry(time)
                .or_default()
                .push((kg, key.clone()));
        }
        new
    }

    /// Visits every registered timer (for a full snapshot), in time order.
    pub fn for_each(&self, mut f: impl FnMut(Timestamp, KeyGroup, &Key)) {
        for (time, keys) in &self.by_time {
            for (kg, key) in keys {
                if self.registered.contains(&(*time, key.clone())) {
                    f(*time, *kg, key);
                }
            }
        }
    }

    /// Deletes a timer; false if there was none.
    pub fn remove(&mut self, time: Timestamp, key: &Key) -> bool {
        let removed = self.registered.remove(&(time, key.clone()));
        if removed {
            self.deleted.insert(time);
        }
        removed
    }
}

impl TimerState for MemoryTimers {
    fn register(&mut self, time: Timestamp, kg: KeyGroup, key: &Key) {
        self.insert(time, kg, key);
    }

    fn delete(&mut self, time: Timestamp, _kg: KeyGroup, key: &Key) {
        self.remove(time, key);
    }

    fn pop_due(&mut self, watermark: Timestamp) -> Vec<(Timestamp, KeyGroup, Key)> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (time, keys) = entry.remove_entry();
            let check = self.deleted.remove(&time);
            for (kg, key) in keys {
                if !check || self.registered.contains(&(time, key.clone())) {
                    self.registered.remove(&(time, key.clone()));
                    due.push((time, kg, key));
                }
            }
        }
        due
    }
}

impl KeyedStateBackend for MemoryBackend {
    type Value<T: StateData> = MemoryValueState<T>;
    type Map<K: MapKey, V: StateData> = MemoryMapState<K, V>;
    type List<T: StateData> = MemoryListState<T>;
    type Timers = MemoryTimers;

    fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    fn value_state<T: StateData>(&mut self, _name: &str) -> Self::Value<T> {
        MemoryValueState {
            data: Partitioned::new(self.range),
        }
    }

    fn map_state<K: MapKey, V: StateData>(&mut self, _name: &str) -> Self::Map<K, V> {
        MemoryMapState {
            data: Partitioned::new(self.range),
        }
    }

    fn list_state<T: StateData>(&mut self, _name: &str) -> Self::List<T> {
        MemoryListState {
            data: Partitioned::new(self.range),
        }
    }

    fn timers(&mut self, _name: &str) -> Self::Timers {
        MemoryTimers::default()
    }
}

/// Conformance checks every backend must pass; run them on a fresh backend owning key groups
/// 0..128 (`testing::conformance(&mut backend)`), as openraft's storage suite does for stores.
pub mod testing {
    use super::*;

    /// Exercises value, map, list and timer state; panics with a message on the first violation.
    pub fn conformance<B: KeyedStateBackend>(backend: &mut B) {
        let k1: Key = vec![Value::Int(1)];
        let k2: Key = vec![Value::str("two")];
        let kg = backend.key_groups().start;

        let mut v = backend.value_state::<i64>("v");
        assert_eq!(v.get(kg, &k1), None);
        v.update(kg, &k1, |slot| *slot = Some(5));
        v.update(kg, &k1, |slot| *slot.as_mut().unwrap() += 1);
        assert_eq!(v.get(kg, &k1), Some(6));
        assert_eq!(v.get(kg, &k2), None, "keys are separate");
        v.update(kg, &k1, |slot| *slot = None);
        assert_eq!(v.get(kg, &k1), None, "None deletes");
        v.update(kg, &k2, |slot| *slot = Some(1));
        assert_eq!(v.take(kg, &k2), Some(1));
        assert_eq!(v.get(kg, &k2), None);

        let mut m = backend.map_state::<i64, String>("m");
        for i in [3i64, 1, 2] {
            m.update(kg, &k1, &i, |slot| *slot = Some(format!("v{i}")));
        }
        let mut seen = Vec::new();
        m.for_each(kg, &k1, |k, v| seen.push((*k, v.clone())));
        assert_eq!(
            seen,
            vec![(1, "v1".into()), (2, "v2".into()), (3, "v3".into())],
            "map iterates in key order"
        );
        assert_eq!(m.remove(kg, &k1, &2), Some("v2".into()));
        assert_eq!(m.get(kg, &k1, &2), None);
        m.clear(kg, &k1);
        let mut count = 0;
        m.for_each(kg, &k1, |_, _| count += 1);
        assert_eq!(count, 0);

        let mut l = backend.list_state::<i64>("l");
        for i in 0..5 {
            l.add(kg, &k2, i);
        }
        l.retain(kg, &k2, |x| x % 2 == 0);
        let mut items = Vec::new();
        l.for_each(kg, &k2, |x| items.push(*x));
        assert_eq!(items, vec![0, 2, 4], "list keeps insertion order");
        l.clear(kg, &k2);
        items.clear();
        l.for_each(kg, &k2, |x| items.push(*x));
        assert!(items.is_empty());

        let mut t = backend.timers("t");
        t.register(20, kg, &k1);
        t.register(10, kg, &k2);
        t.register(10, kg, &k2);
        t.register(30, kg, &k1);
        t.delete(30, kg, &k1);
        assert_eq!(t.pop_due(5), vec![]);
        assert_eq!(
            t.pop_due(20),
            vec![(10, kg, k2.clone()), (20, kg, k1.clone())]
        );
        assert_eq!(t.pop_due(100), vec![], "deleted timers do not fire");
        t.register(40, kg, &k1);
        assert_eq!(t.pop_due(i64::MAX), vec![(40, kg, k1)]);
    }

    #[test]
    fn memory_backend_conforms() {
        conformance(&mut MemoryBackend::new(KeyGroupRange {
            start: 0,
            end: 128,
        }));
    }
}

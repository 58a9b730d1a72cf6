//! State time-to-live: the keyed state of regular joins, group aggregates, deduplication and
//! continuous top-N is dropped once it has not been written for a while, so a job that runs for
//! months over an unbounded key space keeps its state bounded.
//!
//! As Flink's `table.exec.state.ttl`, the time is processing time and an entry's life restarts
//! when it is written (Flink's `OnCreateAndWrite`); expired state is never read (it is removed
//! before each input batch is processed). What this costs in exactness is Flink's too: a key
//! that returns after its state expired starts over (a count from 1, a first row again), and a
//! job replayed from a checkpoint may expire other keys than the first run did. State without
//! a TTL is kept forever, as before.
//!
//! Each key has one timer, at the time its state may expire, and its last write time; when
//! the timer fires the operator drops what is older than the TTL and sets the timer again for
//! what remains. Both live in the operator's keyed state, so they are checkpointed and move
//! with their key group when a job is rescaled. (The RocksDB backend keeps timers in memory, so
//! a TTL costs about one timer per live key of memory: bounded, since the TTL bounds the keys.)

use eddy_runtime::keygroup::KeyGroup;
use eddy_runtime::state::{Key, KeyedStateBackend, StateData, TimerState, ValueState};
use eddy_runtime::types::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The processing-time clock state TTL reads: the wall clock, or one a test moves by hand.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// Milliseconds since the epoch.
    #[default]
    Wall,
    /// Whatever the holder of the counter set, in milliseconds.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The current time in milliseconds.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Wall => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as Timestamp),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// The TTL bookkeeping of one operator: per key, the last write and one expiry timer.
pub struct Ttl<B: KeyedStateBackend> {
    ttl: i64,
    clock: Clock,
    written: B::Value<Timestamp>,
    timers: B::Timers,
}

/// A key whose timer fired: the operator drops its state older than `now - ttl` and, if
/// something is left, calls [`Ttl::keep_until`].
pub struct Due {
    pub kg: KeyGroup,
    pub key: Key,
    /// When the key's state was last written.
    pub written: Timestamp,
}

impl<B: KeyedStateBackend> Ttl<B> {
    /// TTL bookkeeping for state kept `ttl` ms after its last write, or None without a TTL.
    pub fn new(ttl: Option<i64>, backend: &mut B, clock: &Clock) -> Option<Ttl<B>> {
        ttl.map(|ttl| Ttl {
            ttl,
            clock: clock.clone(),
            written: backend.value_state("ttl_written"),
            timers: backend.timers("ttl_timers"),
        })
    }

    /// The current processing time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The TTL in milliseconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Whether state written at `written` has expired at `now`.
    pub fn expired(&self, written: Timestamp, now: Timestamp) -> bool {
        written.saturating_add(self.ttl) <= now
    }

    /// Notes that the state of `key` was written at `now`.
    pub fn touch(&mut self, now: Timestamp, kg: KeyGroup, key: &Key) {
        let first = self
            .written
            .update(kg, key, |slot| slot.replace(now).is_none());
        if first {
            self.timers.register(now.saturating_add(self.ttl), kg, key);
        }
    }

    /// The keys whose timer is due at `now`; each is forgotten until the operator calls
    /// [`Ttl::keep_until`] for it.
    pub fn due(&mut self, now: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        for (_, kg, key) in self.timers.pop_due(now) {
            if let Some(written) = self.written.take(kg, &key) {
                due.push(Due { kg, key, written });
            }
        }
        due
    }

    /// Drops the values of `state` whose key expired (state of one value per key, whose
    /// write is its last change); returns the current time for the writes that follow.
    pub fn expire_values<T: StateData>(&mut self, state: &mut impl ValueState<T>) -> Timestamp {
        let now = self.now();
        for due in self.due(now) {
            if self.expired(due.written, now) {
                state.take(due.kg, &due.key);
            } else {
                self.keep_until(due.written.saturating_add(self.ttl), &due);
            }
        }
        now
    }

    /// Keeps a due key's bookkeeping: it was last written at `written`, and its state is looked
    /// at again at `at`.
    pub fn keep_until(&mut self, at: Timestamp, due: &Due) {
        self.written
            .update(due.kg, &due.key, |slot| *slot = Some(due.written));
        self.timers.register(at, due.kg, &due.key);
    }
}

//! The Kafka source: one subtask reads the partitions of its splits (the partitions spread
//! evenly over the splits, so a rescale moves whole partitions), parses each record's value
//! (JSON with declared columns) and tracks, per partition, the next offset and the largest
//! event time.
//!
//! Both go into checkpoints. A restored subtask resumes every partition at its offset (no
//! record lost or read twice) and its watermark where it was, before it emits anything: a
//! record that was late before a crash is late after it, so results do not depend on when the
//! job failed. The watermark is the minimum over the subtask's partitions of their largest event
//! time minus the delay (Flink's per-partition watermarks), so a partition that lags holds the
//! others back instead of making its records late.

use crate::compile::BuildError;
use crate::dead_letter::DeadLetters;
use crate::format::JsonParser;
use eddy_kafka::{Kafka, Reader, ReaderEvent, StartAt};
use eddy_runtime::checkpoint::SubtaskState;
use eddy_runtime::graph::{KafkaSourceSpec, KafkaStart, WatermarkSpec};
use eddy_runtime::keygroup::KeyGroupRange;
use eddy_runtime::operator::{OpResult, OperatorError, Output, Source, SourcePoll};
use eddy_runtime::types::{Row, Timestamp, MIN_TIMESTAMP};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows per poll, at most (a fetched batch is emitted over several polls).
const BATCH: usize = 1024;

/// One partition of the subtask.
#[derive(Clone, Debug)]
struct Partition {
    id: i32,
    /// The offset of the next record to emit.
    next: i64,
    /// The largest event time emitted from it.
    max_time: Timestamp,
    /// Whether the last fetch found nothing after `next`.
    caught_up: bool,
    last_record: Instant,
    /// Fetched records not emitted yet: (offset, value).
    fetched: VecDeque<(i64, Option<Vec<u8>>)>,
}

/// A checkpointed position: per partition, (partition, next offset, largest event time).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Positions {
    partitions: Vec<(i32, i64, Timestamp)>,
}

/// The split of partition `p` of `count`: partitions spread evenly over the splits, so that
/// every subtask gets its share of them at any parallelism.
fn split_of(p: i32, count: i32, max_parallelism: u32) -> u32 {
    let (p, count, max) = (p as u64, count.max(1) as u64, max_parallelism as u64);
    if count <= max {
        (p * max / count) as u32
    } else {
        (p % max) as u32
    }
}

/// The partitions (of `count`) whose splits `range` owns.
fn owned_partitions(count: i32, range: KeyGroupRange, max_parallelism: u32) -> Vec<i32> {
    (0..count)
        .filter(|&p| range.contains(split_of(p, count, max_parallelism)))
        .collect()
}

/// One subtask of a Kafka source: reads the partitions it owns and checkpoints their offsets
/// and event times, so a restore neither loses nor repeats a record. Unparsable records go to
/// the dead letters.
pub struct KafkaSource {
    name: String,
    topic: String,
    parser: JsonParser,
    reader: Option<Reader>,
    partitions: Vec<Partition>,
    dead_letters: Arc<DeadLetters>,
    time_column: Option<usize>,
    delay: i64,
    idle_timeout: Option<Duration>,
    end_when_idle: Option<Duration>,
    rows: Vec<Row>,
}

/// A Kafka failure at the start of a source, of the right domain.
fn build_error(e: eddy_kafka::KafkaError) -> BuildError {
    if e.is_transient() {
        BuildError::transient(e.to_string())
    } else {
        BuildError::new(e.to_string())
    }
}

impl KafkaSource {
    /// Connects, finds the partitions this subtask owns and where to start in each, and starts
    /// reading them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        spec: &KafkaSourceSpec,
        parser: JsonParser,
        watermark: Option<&WatermarkSpec>,
        time_column: Option<usize>,
        range: KeyGroupRange,
        max_parallelism: u32,
        restored: &[&SubtaskState],
        dead_letters: &Arc<DeadLetters>,
    ) -> Result<KafkaSource, BuildError> {
        let mut positions: BTreeMap<i32, (i64, Timestamp)> = BTreeMap::new();
        for state in restored {
            if state.state.is_null() {
                continue;
            }
            let p = <Positions as serde::Deserialize>::deserialize(&state.state).map_err(|e| {
                BuildError::internal(format!("unreadable Kafka offsets in the checkpoint: {e}"))
            })?;
            for (partition, next, max_time) in p.partitions {
                positions.insert(partition, (next, max_time));
            }
        }
        let topic = spec.topic.clone();
        let setup = eddy_kafka::block_on(async {
            let kafka = Kafka::connect(&spec.brokers).await?;
            let count = kafka.partition_count(&topic).await?;
            let owned = owned_partitions(count, range, max_parallelism);
            let fresh: Vec<i32> = owned
                .iter()
                .copied()
                .filter(|p| !positions.contains_key(p))
                .collect();
            // A partition the checkpoint does not know (added since) starts at the beginning.
            let at = if positions.is_empty() {
                match spec.start {
                    KafkaStart::Earliest => StartAt::Earliest,
                    KafkaStart::Latest => StartAt::Latest,
                }
            } else {
                StartAt::Earliest
            };
            let starts = eddy_kafka::start_offsets(&kafka, &topic, &fresh, at).await?;
            Ok::<_, eddy_kafka::KafkaError>((owned, starts))
        })
        .and_then(|r| r)
        .map_err(build_error)?;
        let (owned, starts) = setup;
        let now = Instant::now();
        let mut partitions = Vec::with_capacity(owned.len());
        for p in owned {
            let (next, max_time) = match positions.get(&p) {
                Some(&(next, max_time)) => (next, max_time),
                None => (
                    starts.iter().find(|(q, _)| *q == p).map_or(0, |(_, o)| *o),
                    MIN_TIMESTAMP,
                ),
            };
            partitions.push(Partition {
                id: p,
                next,
                max_time,
                caught_up: false,
                last_record: now,
                fetched: VecDeque::new(),
            });
        }
        let reader = if partitions.is_empty() {
            None
        } else {
            let from = partitions.iter().map(|p| (p.id, p.next)).collect();
            Some(Reader::start(&spec.brokers, &topic, from).map_err(build_error)?)
        };
        Ok(KafkaSource {
            name: name.to_string(),
            topic,
            parser,
            reader,
            partitions,
            dead_letters: Arc::clone(dead_letters),
            time_column,
            delay: watermark.map_or(0, |w| w.delay),
            idle_timeout: watermark
                .and_then(|w| w.idle_timeout)
                .map(|ms| Duration::from_millis(ms as u64)),
            end_when_idle: spec
                .end_when_idle
                .map(|ms| Duration::from_millis(ms as u64)),
            rows: Vec::new(),
        })
    }

    /// Takes what the reader has fetched into the partitions' queues, each up to a few
    /// batches (a partition that is ahead waits in the reader, not in memory here).
    fn drain_reader(&mut self) -> OpResult<()> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        if let Some(e) = reader.failure() {
            let message = format!("source `{}`: {e}", self.name);
            return Err(if e.is_transient() {
                OperatorError::Transient(message)
            } else {
                OperatorError::User(message)
            });
        }
        for partition in &mut self.partitions {
            while partition.fetched.len() < 2 * BATCH {
                match reader.try_next(partition.id) {
                    Some(ReaderEvent::Records(fetched)) => {
                        partition.caught_up = fetched
                            .records
                            .last()
                            .is_some_and(|r| r.offset + 1 >= fetched.high_watermark);
                        for r in fetched.records {
                            partition.fetched.push_back((r.offset, r.record.value));
                        }
                    }
                    Some(ReaderEvent::CaughtUp { .. }) => partition.caught_up = true,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// The partition to emit from next: of those with fetched records, the one furthest behind
    /// in event time, so that the subtask's output follows event time across its partitions
    /// whatever the fetches returned first (a backfill reads one partition's megabyte before
    /// the next one's). `None` when a partition that is further behind has nothing fetched yet
    /// but is not at its end: its records come next, so wait for them.
    /// The watermark as of `now` (a poll reads the clock once, not once per record).
    fn watermark_at(&self, now: Instant) -> Option<Timestamp> {
        self.time_column?;
        // Partitions quiet for longer than the idle timeout do not hold the others back; when
        // all are quiet, the most advanced one counts (as the executor's idle channels do).
        let active = |p: &&Partition| {
            self.idle_timeout
                .is_none_or(|t| now.saturating_duration_since(p.last_record) < t || !p.caught_up)
        };
        let min_active = self
            .partitions
            .iter()
            .filter(active)
            .map(|p| p.max_time)
            .min();
        let time = match min_active {
            Some(t) => t,
            None => self.partitions.iter().map(|p| p.max_time).max()?,
        };
        (time != MIN_TIMESTAMP).then(|| time.saturating_sub(self.delay))
    }

    fn next_partition(&self) -> Option<usize> {
        let (i, behind) = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.fetched.is_empty())
            .map(|(i, p)| (i, p.max_time))
            .min_by_key(|&(_, t)| t)?;
        let waiting = self
            .partitions
            .iter()
            .any(|p| p.fetched.is_empty() && !p.caught_up && p.max_time <= behind);
        (!waiting).then_some(i)
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
        if self.partitions.is_empty() {
            return Ok(SourcePoll::Finished);
        }
        self.drain_reader()?;
        let mut emitted = 0;
        let now = Instant::now();
        // Like the file source, a poll ends once its rows span enough event time, and once
        // the watermark first exists, so that it goes out before what follows.
        let started_at = self.watermark_at(now);
        while emitted < BATCH {
            match (started_at, self.watermark_at(now)) {
                (None, Some(_)) => break,
                (Some(a), Some(b)) if b - a >= crate::source::POLL_EVENT_TIME => break,
                _ => {}
            }
            let Some(i) = self.next_partition() else {
                break;
            };
            let partition = &mut self.partitions[i];
            let Some((offset, value)) = partition.fetched.pop_front() else {
                break;
            };
            partition.next = offset + 1;
            partition.last_record = now;
            let dead_letter = |reason: &str, payload: &[u8]| {
                self.dead_letters
                    .record(
                        &self.name,
                        &format!("{}/{}", self.topic, partition.id),
                        offset as u64,
                        reason,
                        payload,
                    )
                    .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))
            };
            let Some(value) = value else {
                dead_letter("a record without a value", b"")?;
                continue;
            };
            self.rows.clear();
            match self.parser.parse_many(&value, &mut self.rows) {
                Ok(()) => {
                    for row in self.rows.drain(..) {
                        if let Some(t) = self.time_column.and_then(|c| row.values[c].as_timestamp())
                        {
                            partition.max_time = partition.max_time.max(t);
                        }
                        out.emit(0, row);
                        emitted += 1;
                    }
                }
                Err(e) => dead_letter(&e.to_string(), &value)?,
            }
        }
        let queued = self.partitions.iter().any(|p| !p.fetched.is_empty());
        if emitted > 0 {
            return Ok(SourcePoll::Ready);
        }
        if queued {
            // Waiting for a partition that is behind: give its fetch a moment.
            return Ok(SourcePoll::Idle);
        }
        if let Some(quiet) = self.end_when_idle {
            let done = self
                .partitions
                .iter()
                .all(|p| p.caught_up && p.last_record.elapsed() >= quiet);
            if done {
                return Ok(SourcePoll::Finished);
            }
        }
        Ok(SourcePoll::Idle)
    }

    fn tracks_watermark(&self) -> bool {
        self.time_column.is_some()
    }

    fn watermark(&self) -> Option<Timestamp> {
        self.watermark_at(Instant::now())
    }

    fn snapshot(&mut self) -> OpResult<serde_json::Value> {
        self.dead_letters
            .sync()
            .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))?;
        let positions = Positions {
            partitions: self
                .partitions
                .iter()
                .map(|p| (p.id, p.next, p.max_time))
                .collect(),
        };
        serde_json::to_value(positions).map_err(|e| OperatorError::Message(e.to_string()))
    }

    fn close(&mut self) -> OpResult {
        self.reader = None;
        self.dead_letters
            .sync()
            .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_at_any_parallelism() {
        for p in [1, 2, 3, 5] {
            let mut seen = vec![0; 12];
            for s in 0..p {
                for q in owned_partitions(12, KeyGroupRange::of_subtask(s, p, 128), 128) {
                    seen[q as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "p={p}: {seen:?}");
        }
        let share =
            |p: u32, s: u32| owned_partitions(4, KeyGroupRange::of_subtask(s, p, 128), 128).len();
        assert_eq!(
            (share(2, 0), share(2, 1)),
            (2, 2),
            "4 partitions over 2 subtasks"
        );
        assert_eq!((0..4).map(|s| share(4, s)).collect::<Vec<_>>(), vec![1; 4]);
    }
}

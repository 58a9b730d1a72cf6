//! Kafka for Eddy, over the pure-Rust `rskafka` client (no librdkafka, no C build).
//!
//! - [`Kafka`]: a connection to a cluster; creates topics and finds partitions and offsets.
//! - [`Producer`]: appends records with `acks=all`, in the order they were sent, batching
//!   concurrent sends per partition; a send returns only once the broker has the record, which
//!   is what lets the ingest API acknowledge an event without ever losing it.
//! - [`Reader`]: reads a set of partitions from given offsets on a background thread, for a
//!   source subtask whose checkpoints hold the offsets (exactly-once input).
//! - [`testing::Broker`]: a real broker (tansu) on a free loopback port, for tests.
//!
//! Keys are assigned to partitions as Kafka's Java client does (murmur2), so records written by
//! Eddy and by other Kafka clients agree on where a key lives.

mod producer;
pub mod testing;

pub use producer::Producer;

use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A record with its offset, as [`Fetched`] carries it; re-exported so readers need not depend
/// on rskafka.
pub use rskafka::record::RecordAndOffset;

/// Why a Kafka operation failed; names the brokers or the topic.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No broker answered within the retry deadline (10 s), or the address list was empty.
    #[error("cannot reach Kafka at `{brokers}`: {message} (check the address, and that the broker runs)")]
    Connect {
        /// The broker list as given to [`Kafka::connect`].
        brokers: String,
        /// The client's reason.
        message: String,
    },
    /// The topic does not exist (or metadata shows it with no partitions yet).
    #[error("Kafka topic `{topic}` does not exist at `{brokers}`; create it first (`eddy serve` creates the topics it writes)")]
    NoTopic {
        /// The missing topic.
        topic: String,
        /// The cluster it was looked up in.
        brokers: String,
    },
    /// A request failed after its retries.
    #[error("Kafka {action} on `{topic}` failed: {message}")]
    Request {
        /// What was asked, for the message: "produce", "fetch", "offset lookup", ...
        action: &'static str,
        /// The topic concerned; `*` for cluster metadata, empty when there is none.
        topic: String,
        /// The client's reason.
        message: String,
    },
    /// Retention deleted records a reader had yet to read, e.g. past a restored checkpoint's
    /// offset: input is lost, so the job must fail rather than skip ahead.
    #[error("Kafka partition {topic}/{partition} no longer holds offset {offset} (its oldest is {earliest}): records were deleted before they were read")]
    OffsetGone {
        /// The topic read.
        topic: String,
        /// The partition read.
        partition: i32,
        /// The offset the reader wanted next.
        offset: i64,
        /// The partition's oldest offset now, above `offset`.
        earliest: i64,
    },
}

impl KafkaError {
    /// Whether trying again later may succeed: the broker was down or slow. A missing topic is
    /// a mistake in the job, and deleted records are input lost for good.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KafkaError::Connect { .. } | KafkaError::Request { .. }
        )
    }
}

/// How long requests are retried before an operation fails (broker down, topic missing).
const RETRY_DEADLINE: Duration = Duration::from_secs(10);

type PartitionClients = HashMap<(String, i32), Arc<PartitionClient>>;

/// A connection to a Kafka cluster.
pub struct Kafka {
    brokers: String,
    client: Client,
    partitions: Mutex<PartitionClients>,
}

impl Kafka {
    /// Connects to `brokers`: `host:port`, comma-separated for several.
    pub async fn connect(brokers: &str) -> Result<Kafka, KafkaError> {
        let list: Vec<String> = brokers
            .split(',')
            .map(|b| b.trim().trim_start_matches("kafka://").to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if list.is_empty() {
            return Err(KafkaError::Connect {
                brokers: brokers.into(),
                message: "no broker address given (e.g. 127.0.0.1:9092)".into(),
            });
        }
        let backoff = rskafka::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(RETRY_DEADLINE),
        };
        let connect = ClientBuilder::new(list)
            .client_id("eddy")
            .backoff_config(backoff)
            .build();
        let client = tokio::time::timeout(RETRY_DEADLINE, connect)
            .await
            .map_err(|_| KafkaError::Connect {
                brokers: brokers.into(),
                message: format!("no answer within {} s", RETRY_DEADLINE.as_secs()),
            })?
            .map_err(|e| KafkaError::Connect {
                brokers: brokers.into(),
                message: e.to_string(),
            })?;
        Ok(Kafka {
            brokers: brokers.into(),
            client,
            partitions: Mutex::default(),
        })
    }

    /// The broker list as given to [`Kafka::connect`], e.g. to start a [`Reader`] (which
    /// connects on its own thread).
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    fn request_error(action: &'static str, topic: &str, e: impl std::fmt::Display) -> KafkaError {
        KafkaError::Request {
            action,
            topic: topic.into(),
            message: e.to_string(),
        }
    }

    /// The number of partitions of each existing topic.
    pub async fn topics(&self) -> Result<BTreeMap<String, i32>, KafkaError> {
        let topics = self
            .client
            .list_topics()
            .await
            .map_err(|e| Self::request_error("metadata", "*", e))?;
        Ok(topics
            .into_iter()
            .map(|t| (t.name, t.partitions.len() as i32))
            .collect())
    }

    /// The number of partitions of `topic`, which must exist.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, KafkaError> {
        match self.topics().await?.get(topic) {
            Some(&n) if n > 0 => Ok(n),
            _ => Err(KafkaError::NoTopic {
                topic: topic.into(),
                brokers: self.brokers.clone(),
            }),
        }
    }

    /// Creates `topic` with `partitions` partitions unless it exists; returns its partition
    /// count (an existing topic keeps its own).
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32, KafkaError> {
        if let Some(&n) = self.topics().await?.get(topic) {
            return Ok(n);
        }
        let controller = self
            .client
            .controller_client()
            .map_err(|e| Self::request_error("create", topic, e))?;
        if let Err(e) = controller.create_topic(topic, partitions, 1, 10_000).await {
            // Someone else may have created it meanwhile.
            if !self.topics().await?.contains_key(topic) {
                return Err(Self::request_error("create", topic, e));
            }
        }
        // Metadata catches up with a creation shortly after.
        for _ in 0..100 {
            if let Some(&n) = self.topics().await?.get(topic) {
                if n > 0 {
                    return Ok(n);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(KafkaError::NoTopic {
            topic: topic.into(),
            brokers: self.brokers.clone(),
        })
    }

    /// The client of one partition, cached.
    pub async fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        let key = (topic.to_string(), partition);
        if let Some(c) = self.lock_partitions().get(&key) {
            return Ok(Arc::clone(c));
        }
        let client = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Error)
            .await
            .map_err(|e| Self::request_error("partition lookup", topic, e))?;
        let client = Arc::new(client);
        self.lock_partitions().insert(key, Arc::clone(&client));
        Ok(client)
    }

    fn lock_partitions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Arc<PartitionClient>>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset after the last record of each partition of `topic` (its high watermark).
    pub async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, KafkaError> {
        let n = self.partition_count(topic).await?;
        let mut ends = Vec::with_capacity(n as usize);
        for p in 0..n {
            ends.push(self.high_watermark(topic, p).await?);
        }
        Ok(ends)
    }

    /// The offset after the last record of a partition, from a fetch's high watermark. (A
    /// `ListOffsets` for the latest offset is what Kafka clients usually ask, but tansu 0.6
    /// answers it with the start of the last batch plus one; the fetch answer is right on
    /// every broker.)
    pub async fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        let client = self.partition(topic, partition).await?;
        let earliest = client
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| Self::request_error("offset lookup", topic, e))?;
        let (_, high_watermark) = client
            .fetch_records(earliest, 1..2, 0)
            .await
            .map_err(|e| Self::request_error("offset lookup", topic, e))?;
        Ok(high_watermark)
    }
}

/// Kafka's murmur2 hash (as in the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key among `partitions`, as Kafka's default partitioner chooses it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// The wall-clock time, as record timestamps carry it.
fn now() -> chrono::DateTime<chrono::Utc> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Records of one partition read by a [`Reader`].
#[derive(Debug)]
pub struct Fetched {
    /// The partition the records come from.
    pub partition: i32,
    /// Never empty; in offset order, each offset once, from the offset asked for on.
    pub records: Vec<RecordAndOffset>,
    /// The partition's high watermark at the fetch: the reader is caught up when the offset
    /// after the last record equals it.
    pub high_watermark: i64,
}

/// What a [`Reader`] delivers for one partition.
#[derive(Debug)]
pub enum ReaderEvent {
    /// New records; the next event of the partition continues after the last of them.
    Records(Fetched),
    /// The partition had nothing new: it is caught up at this offset.
    CaughtUp {
        /// The partition.
        partition: i32,
        /// The offset of the next record, once it is written (the high watermark).
        offset: i64,
    },
}

/// Reads partitions of one topic from given offsets on a background thread with its own small
/// async runtime. Each partition has its own bounded queue ahead of the consumer: fetching
/// overlaps processing, a slow consumer stops the fetching (backpressure), and a partition the
/// consumer is not taking from (it is ahead of the others) does not keep the others from
/// being fetched. Dropping the reader stops the thread.
pub struct Reader {
    partitions: HashMap<i32, tokio::sync::mpsc::Receiver<ReaderEvent>>,
    failures: tokio::sync::mpsc::UnboundedReceiver<KafkaError>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes asked for per fetch, per partition.
const FETCH_BYTES: i32 = 1 << 20;

/// Fetches queued per partition ahead of the consumer.
const QUEUED_FETCHES: usize = 2;

impl Reader {
    /// Starts reading `topic` at `brokers`: each `(partition, offset)` from that offset on.
    pub fn start(brokers: &str, topic: &str, from: Vec<(i32, i64)>) -> Result<Reader, KafkaError> {
        let mut senders = Vec::new();
        let mut partitions = HashMap::new();
        for &(p, offset) in &from {
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_FETCHES);
            senders.push((p, offset, tx));
            partitions.insert(p, rx);
        }
        let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Kafka::request_error("reader start", topic, e))?;
        let (brokers, topic) = (brokers.to_string(), topic.to_string());
        // Connecting happens on the thread; its errors arrive as failures.
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{topic}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = read_all(brokers, topic, senders, failures_tx) => {}
                    }
                });
            })
            .map_err(|e| Kafka::request_error("reader start", "", e))?;
        Ok(Reader {
            partitions,
            failures,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The next event of `partition` if one is ready.
    pub fn try_next(&mut self, partition: i32) -> Option<ReaderEvent> {
        self.partitions.get_mut(&partition)?.try_recv().ok()
    }

    /// Why reading failed for good, if it did (the job should fail with this).
    pub fn failure(&mut self) -> Option<KafkaError> {
        self.failures.try_recv().ok()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for rx in self.partitions.values_mut() {
            rx.close();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type PartitionSender = (i32, i64, tokio::sync::mpsc::Sender<ReaderEvent>);

async fn read_all(
    brokers: String,
    topic: String,
    partitions: Vec<PartitionSender>,
    failures: tokio::sync::mpsc::UnboundedSender<KafkaError>,
) {
    let kafka = match Kafka::connect(&brokers).await {
        Ok(k) => Arc::new(k),
        Err(e) => {
            let _ = failures.send(e);
            return;
        }
    };
    if let Err(e) = kafka.partition_count(&topic).await {
        let _ = failures.send(e);
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (partition, offset, tx) in partitions {
        let (kafka, topic, failures) = (Arc::clone(&kafka), topic.clone(), failures.clone());
        tasks.spawn(async move {
            if let Err(e) = read_partition(&kafka, &topic, partition, offset, &tx).await {
                let _ = failures.send(e);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn read_partition(
    kafka: &Kafka,
    topic: &str,
    partition: i32,
    mut offset: i64,
    tx: &tokio::sync::mpsc::Sender<ReaderEvent>,
) -> Result<(), KafkaError> {
    let client = kafka.partition(topic, partition).await?;
    let mut failures = 0u32;
    loop {
        match fetch_from(&client, offset).await {
            Ok((records, high_watermark)) => {
                failures = 0;
                let records = in_order_from(records, offset);
                let event = match records.last() {
                    Some(last) => {
                        offset = last.offset + 1;
                        ReaderEvent::Records(Fetched {
                            partition,
                            records,
                            high_watermark,
                        })
                    }
                    None if offset >= high_watermark => ReaderEvent::CaughtUp { partition, offset },
                    // Nothing readable yet below the high watermark: not caught up (that
                    // would let the partition's watermark pass rows still to come).
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("OffsetOutOfRange") {
                    let earliest = client.get_offset(OffsetAt::Earliest).await.unwrap_or(-1);
                    if earliest > offset {
                        return Err(KafkaError::OffsetGone {
                            topic: topic.into(),
                            partition,
                            offset,
                            earliest,
                        });
                    }
                }
                failures += 1;
                if failures >= 30 {
                    return Err(Kafka::request_error("fetch", topic, e));
                }
                tracing::warn!(topic, partition, offset, error = %e, "Kafka fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * failures as u64)).await;
            }
        }
    }
}

/// Fetches the records from `offset` on. Kafka answers a fetch that starts inside a record
/// batch with that whole batch (the client drops what lies before the offset); tansu 0.6 answers
/// it with the next batch, silently skipping the rest of this one. So when the answer starts
/// after `offset`, or is empty below the high watermark, fetch again from further back until
/// the answer covers `offset`. In a steady read every fetch starts at a batch boundary and
/// this costs nothing; after a restore at a checkpointed offset it costs a few round trips.
async fn fetch_from(
    client: &PartitionClient,
    offset: i64,
) -> Result<(Vec<RecordAndOffset>, i64), rskafka::client::error::Error> {
    let (first_answer, high_watermark) = client.fetch_records(offset, 1..FETCH_BYTES, 200).await?;
    let skipped = match first_answer.first() {
        Some(first) => first.offset > offset,
        None => high_watermark > offset,
    };
    if !skipped {
        return Ok((first_answer, high_watermark));
    }
    let earliest = client.get_offset(OffsetAt::Earliest).await?;
    let mut back = 1;
    loop {
        let from = offset.saturating_sub(back).max(earliest);
        let (records, high_watermark) = client.fetch_records(from, 1..FETCH_BYTES, 0).await?;
        let covers = records.first().is_some_and(|r| r.offset <= offset);
        if !covers && from == earliest && !first_answer.is_empty() {
            // No batch holds `offset` at all: a gap in the log (compaction deleted those
            // records), not a fetch that skipped part of a batch. Read on after it.
            return Ok((first_answer, high_watermark));
        }
        if covers || from == earliest {
            let records = in_order_from(records, offset);
            if records.is_empty() {
                // Nothing readable at `offset` although the partition goes further: on Kafka,
                // transaction markers (which the client drops). Waiting keeps the caller's next
                // try from spinning against the broker.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            return Ok((records, high_watermark));
        }
        back = back.saturating_mul(2);
    }
}

/// The records at or after `offset`, each offset once, in order. A fetch may start inside a
/// batch (the records before the offset come along), and tansu 0.6 can answer a fetch that
/// overlaps a concurrent append with the same batch twice; a record must still reach the job
/// once.
fn in_order_from(records: Vec<RecordAndOffset>, offset: i64) -> Vec<RecordAndOffset> {
    let mut next = offset;
    records
        .into_iter()
        .filter(|r| {
            let fresh = r.offset >= next;
            if fresh {
                next = r.offset + 1;
            }
            fresh
        })
        .collect()
}

/// Where a reader without a checkpoint starts in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still retained: read the whole topic.
    Earliest,
    /// The high watermark: only records written after the start.
    Latest,
}

/// The first offset of each partition for a fresh start.
pub async fn start_offsets(
    kafka: &Kafka,
    topic: &str,
    partitions: &[i32],
    at: StartAt,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let mut result = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let offset = match at {
            StartAt::Earliest => kafka
                .partition(topic, p)
                .await?
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(|e| Kafka::request_error("offset lookup", topic, e))?,
            StartAt::Latest => kafka.high_watermark(topic, p).await?,
        };
        result.push((p, offset));
    }
    Ok(result)
}

/// A current-thread runtime for blocking callers (sources, sinks, the CLI) to run one async
/// Kafka operation.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, KafkaError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Kafka::request_error("runtime start", "", e))?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reach_the_reader_once_in_order() {
        let record = |offset| RecordAndOffset {
            record: rskafka::record::Record {
                key: None,
                value: None,
                headers: BTreeMap::new(),
                timestamp: now(),
            },
            offset,
        };
        let fetched = [3, 4, 5, 6, 4, 5, 6, 7].map(record).to_vec();
        let offsets: Vec<i64> = in_order_from(fetched, 5).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![5, 6, 7]);
    }

    #[test]
    fn keys_land_where_the_java_client_puts_them() {
        // The cases of Kafka's own UtilsTest.testMurmur2 (Java ints).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        let spread: std::collections::HashSet<i32> = (0..100)
            .map(|i| partition_for(format!("s{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}

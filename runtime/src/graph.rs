//! The validated job graph: what a job computes, independent of how its file was written and of
//! where its tasks will run.
//!
//! A `JobGraph` is produced only by the job compiler (`eddy-jobs`), which has type-checked every
//! expression against the schemas recorded here. It is plain data (strings, numbers, schemas) so
//! it can be stored by the coordinator and shipped to workers; expressions travel as their source
//! text and are compiled again, deterministically, where operators are built.

use crate::types::{DataType, SchemaRef, Timestamp};
use serde::{Deserialize, Serialize};

/// Index of a node in [`JobGraph::nodes`].
pub type NodeId = usize;

/// A whole job: nodes in topological order (every edge goes from a lower to a higher id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobGraph {
    pub name: String,
    /// The number of key groups; the upper bound for any node's parallelism.
    pub max_parallelism: u32,
    pub nodes: Vec<Node>,
}

impl JobGraph {
    /// The nodes reading the given output port of a node, with their input index.
    pub fn consumers(&self, node: NodeId, port: usize) -> Vec<(NodeId, usize)> {
        let mut result = Vec::new();
        for n in &self.nodes[node + 1..] {
            for (i, e) in n.inputs.iter().enumerate() {
                if e.from == node && e.port == port {
                    result.push((n.id, i));
                }
            }
        }
        result
    }

    /// The schema arriving on input `input` of `node`.
    pub fn input_schema(&self, node: NodeId, input: usize) -> &SchemaRef {
        let edge = &self.nodes[node].inputs[input];
        &self.nodes[edge.from].outputs[edge.port].schema
    }

    /// The files and directories the job's sources read and its sinks write, each with what
    /// it is for (`the output of sink `out``), to check against the paths an operator allows.
    pub fn file_paths(&self) -> Vec<(String, String)> {
        let mut paths = Vec::new();
        for n in &self.nodes {
            match &n.kind {
                NodeKind::Source(s) => {
                    if let SourceConnector::File { path, .. } = &s.connector {
                        paths.push((format!("the input of source `{}`", n.name), path.clone()));
                    }
                }
                NodeKind::Sink(s) => {
                    if let SinkConnector::File { path } = &s.connector {
                        paths.push((format!("the output of sink `{}`", n.name), path.clone()));
                    }
                }
                _ => {}
            }
        }
        paths
    }

    /// Whether the stream on input `input` of `node` carries updates (retractions).
    pub fn input_updating(&self, node: NodeId, input: usize) -> bool {
        let edge = &self.nodes[node].inputs[input];
        self.nodes[edge.from].outputs[edge.port].updating
    }
}

/// One operator, source or sink of the job, with its parallelism and typed outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// Unique in the job; used in errors, thread names, metrics and (later) state ids.
    pub name: String,
    pub parallelism: u32,
    /// Inputs in order: a join's input 0 is its left side.
    pub inputs: Vec<Edge>,
    /// Output ports: one for most nodes, one per table for a Nexmark source, none for sinks.
    pub outputs: Vec<Port>,
    pub kind: NodeKind,
}

/// One output of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Port {
    /// Empty for a node's only port; the table name for multi-output sources (`events.bid`).
    pub name: String,
    pub schema: SchemaRef,
    /// True when the stream carries retractions (-U/-D) and not only insertions.
    pub updating: bool,
}

/// A connection from an output port to a node input, and how records are distributed over the
/// receiving subtasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Edge {
    pub from: NodeId,
    pub port: usize,
    pub partitioning: Partitioning,
}

/// How records on an edge are distributed among the receiving subtasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Partitioning {
    /// Subtask i sends to subtask i (same parallelism); such edges can be chained.
    Forward,
    /// By key group of the key expressions (over the sender's schema): keyed state lives there.
    Hash(Vec<String>),
    /// Round-robin, batch by batch: spreads load when parallelism changes without a key.
    Rebalance,
    /// Every record to every subtask.
    Broadcast,
}

/// An expression with the name of the column it produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedExpr {
    pub expr: String,
    pub name: String,
}

/// What a node does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NodeKind {
    Source(SourceSpec),
    /// Keeps rows for which the predicate is TRUE.
    Filter {
        predicate: String,
    },
    /// Computes new columns from each row (map / project).
    Select {
        columns: Vec<NamedExpr>,
    },
    /// Passes rows through; its input edge partitions them by key.
    KeyBy {
        key: Vec<String>,
    },
    /// Merges inputs of the same schema.
    Union,
    /// Aggregates per key and event-time window; emits each window once when it closes.
    WindowAggregate {
        window: WindowSpec,
        group_by: Vec<NamedExpr>,
        aggregates: Vec<NamedExpr>,
    },
    /// Aggregates per key over the whole stream; emits updates as results change.
    GroupAggregate {
        group_by: Vec<NamedExpr>,
        aggregates: Vec<NamedExpr>,
        /// Milliseconds of processing time a group is kept after its last update (state TTL);
        /// None keeps it forever.
        ttl: Option<i64>,
    },
    Join(JoinSpec),
    TopN(TopNSpec),
    Deduplicate(DeduplicateSpec),
    /// Scores each window's value of a per-key series against the previous windows and emits
    /// the anomalous ones.
    Anomaly(AnomalySpec),
    Sink(SinkSpec),
}

impl NodeKind {
    /// The name users write in job files (`type = "..."`).
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Source(_) => "source",
            NodeKind::Filter { .. } => "filter",
            NodeKind::Select { .. } => "select",
            NodeKind::KeyBy { .. } => "key_by",
            NodeKind::Union => "union",
            NodeKind::WindowAggregate { .. } => "window_aggregate",
            NodeKind::GroupAggregate { .. } => "group_aggregate",
            NodeKind::Join(j) => match j.kind {
                JoinKind::Regular { .. } => "join",
                JoinKind::Window { .. } => "window_join",
                JoinKind::Interval { .. } => "interval_join",
                JoinKind::Temporal { .. } => "temporal_join",
            },
            NodeKind::TopN(_) => "top_n",
            NodeKind::Deduplicate(_) => "deduplicate",
            NodeKind::Anomaly(_) => "anomaly",
            NodeKind::Sink(_) => "sink",
        }
    }
}

/// Event-time windows. Every window type adds `window_start` and `window_end` columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumble { time: String, size: i64 },
    /// Windows of `size` ms starting every `slide` ms (a row is in size/slide windows).
    Hop { time: String, size: i64, slide: i64 },
    /// Per key, rows closer than `gap` ms belong to one session; it ends `gap` after its last row.
    Session { time: String, gap: i64 },
    /// The window a previous window operator assigned, from its start and end columns (Flink's
    /// window attribute propagation: aggregating the result of a window aggregate per window).
    Inherit { start: String, end: String },
}

/// A join of input 0 (left) and input 1 (right) on equal keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinSpec {
    pub kind: JoinKind,
    /// Names expressions may use to qualify columns (`A.id`, `B.auction`).
    pub left_alias: String,
    pub right_alias: String,
    /// Equal-key expressions over the left and right schemas (same length).
    pub left_key: Vec<String>,
    pub right_key: Vec<String>,
    /// Extra condition over the joined row, with aliases.
    pub condition: Option<String>,
    /// Output columns over the joined row.
    pub columns: Vec<NamedExpr>,
}

/// Which rows of the two sides meet, and when state can be dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JoinKind {
    /// Every pair with equal keys whose rows are both kept: rows are kept forever, or `ttl`
    /// milliseconds of processing time after they arrived (state TTL). Both inputs append-only.
    Regular { ttl: Option<i64> },
    /// Pairs from the same window (equal window end columns); emitted when the window closes.
    Window { left_end: String, right_end: String },
    /// Pairs where `left_time + lower <= right_time <= left_time + upper`; emitted on arrival,
    /// state dropped once the watermark passes the bound.
    Interval {
        left_time: String,
        right_time: String,
        lower: i64,
        upper: i64,
    },
    /// Event-time temporal join (Flink's `FOR SYSTEM_TIME AS OF`): the right side is a
    /// versioned table (a row per key and version time); each left row meets the version in
    /// force at its time, the latest with `right_time <= left_time`. Left rows wait until the
    /// watermark passes their time, so every version they may need has arrived. Versions are
    /// kept for `retention` behind the watermark, so late left rows still find theirs.
    Temporal {
        left_time: String,
        right_time: String,
        retention: i64,
        /// Keep left rows without a version, with NULL right columns (LEFT JOIN).
        left_outer: bool,
    },
}

/// A robust anomaly detector over a per-key series of window results (one row per key and
/// window, in window order): each value is scored against the median and the median absolute
/// deviation (MAD) of the key's previous `history` windows, and a window whose
/// `|0.6745 (x - median) / MAD|` reaches `threshold` is emitted. Windows missing between two
/// present ones count as 0 (a minute without orders is the strongest revenue drop).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnomalySpec {
    /// The series key (e.g. the metric name): output columns first.
    pub key: Vec<NamedExpr>,
    /// The window end column of the input (TIMESTAMP).
    pub time: String,
    /// The value scored (numeric).
    pub value: String,
    /// The window size: consecutive windows are `every` apart.
    pub every: i64,
    /// Windows of history the median and MAD are taken over.
    pub history: usize,
    /// No score before this many windows of history.
    pub min_history: usize,
    pub threshold: f64,
    /// The MAD is taken as at least this fraction of |median|.
    pub min_spread: f64,
}

/// ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) <= limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopNSpec {
    pub partition_by: Vec<String>,
    pub order_by: Vec<OrderBy>,
    pub limit: usize,
    /// Adds the row number as a BIGINT column with this name.
    pub rank_column: Option<String>,
    /// When set (a window end column), ranks per window and emits each window's final top rows
    /// once it closes, append-only (Flink's window top-N); otherwise emits updates continuously.
    pub window_end: Option<String>,
    /// Continuous top-N: milliseconds of processing time a partition's rows are kept after
    /// they last changed (state TTL); None keeps them forever.
    pub ttl: Option<i64>,
}

/// One ORDER BY item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderBy {
    pub expr: String,
    pub descending: bool,
}

/// Keeps the first or last row per key in event time (ROW_NUMBER = 1 ordered by a time column).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeduplicateSpec {
    pub key: Vec<String>,
    pub time: String,
    pub keep: Keep,
    /// Milliseconds of processing time a key's row is kept after it was last replaced (state
    /// TTL); the key's next row is then new. None keeps it forever.
    pub ttl: Option<i64>,
}

/// Which row a deduplication keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Keep {
    /// The earliest row; later ones are dropped (append-only output).
    First,
    /// The latest row; an equal time replaces too (updating output).
    Last,
}

/// A source: where rows come from and how event time is tracked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceSpec {
    pub connector: SourceConnector,
    pub watermark: Option<WatermarkSpec>,
}

/// The connectors that can start a stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SourceConnector {
    /// JSON lines from a file or a directory of files (`.gz` decompressed). With parallelism
    /// P, subtask i reads every line whose index mod P is i, so each subtask's stream keeps the
    /// file's order.
    File { path: String, format: FileFormat },
    /// The built-in Nexmark generator (crate `nexmark`); subtask i generates events i, i+P, ...
    NexmarkGenerator(GeneratorSpec),
    /// A Kafka topic. Partitions are spread evenly over the splits; checkpoints hold
    /// each partition's next offset and largest event time, so a restored job reads every
    /// record once and its watermarks resume where they were.
    Kafka(KafkaSourceSpec),
}

/// Settings of a Kafka source.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KafkaSourceSpec {
    /// `host:port`, comma-separated.
    pub brokers: String,
    pub topic: String,
    /// How a record's value becomes rows (JSON with declared columns).
    pub format: FileFormat,
    /// Where to begin in a partition when no checkpoint says.
    pub start: KafkaStart,
    /// Finish once every partition has been read to its end and stayed quiet this long (ms):
    /// a backfill or a test over a topic being loaded. `None`: read forever.
    pub end_when_idle: Option<i64>,
}

/// Where a Kafka source without a checkpoint begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KafkaStart {
    /// The oldest record the broker keeps.
    Earliest,
    /// After the last record at the start: only new records.
    Latest,
}

/// Line formats of the file source.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FileFormat {
    /// Nexmark's nested events; ports person, auction, bid.
    Nexmark,
    /// Flat or nested JSON objects with declared columns; one port.
    Json {
        columns: Vec<JsonColumnSpec>,
        /// One row per element of this array (columns under its path read the element).
        #[serde(default)]
        unnest: Option<UnnestSpec>,
    },
}

/// Turns each element of an array inside a JSON record into a row of its own (an order's
/// items into order lines): columns whose path starts with the array's path read the element,
/// the others the record; `ordinal` names an extra BIGINT column with the element's position,
/// from 1. An empty or null array gives no row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnnestSpec {
    pub path: String,
    pub ordinal: Option<String>,
}

/// A declared column of a JSON-lines source.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JsonColumnSpec {
    pub name: String,
    pub data_type: DataType,
    /// Dotted path into nested objects; the name when absent.
    pub path: Option<String>,
}

/// Settings of the Nexmark generator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratorSpec {
    /// Total events over all subtasks; unbounded when absent.
    pub events: Option<u64>,
    /// Events per second of event time: sets the spacing of timestamps.
    pub rate: u64,
    /// Event time of the first event.
    pub base_time: Timestamp,
    /// When true, emits no faster than `rate` in wall-clock time (a live stream); otherwise as
    /// fast as possible (benchmarks).
    pub throttle: bool,
}

/// Watermarks of a source: bounded out-of-orderness over a time column present in every port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatermarkSpec {
    pub column: String,
    /// Watermark = largest time seen - delay.
    pub delay: i64,
    /// A subtask with no data for this long is marked idle so it does not hold others back.
    pub idle_timeout: Option<i64>,
}

/// Where results go.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SinkSpec {
    pub connector: SinkConnector,
}

/// The sink connectors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SinkConnector {
    /// JSON lines into one file, shared by all sink subtasks.
    File { path: String },
    /// JSON lines on standard output.
    Stdout,
    /// Discards rows (benchmarks).
    Blackhole,
    /// Rows into a PostgreSQL table, exactly once with checkpointing.
    Postgres {
        /// libpq connection string or URL.
        url: String,
        /// The table (optionally `schema.table`); it must exist.
        table: String,
        /// Empty: append. Else the table's key: one row per key, upserted and deleted.
        key: Vec<String>,
        /// Star-schema lookups: surrogate keys written in place of natural keys.
        #[serde(default)]
        dimensions: Vec<DimensionSpec>,
    },
}

/// A dimension lookup of a PostgreSQL sink: the sink's `column` is the natural key of a row of
/// the dimension `table` (its column `natural`); the fact row gets that row's surrogate key
/// column `key`, the dimension row being created when missing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimensionSpec {
    pub column: String,
    pub table: String,
    pub natural: String,
    pub key: String,
}

//! The job file as written: TOML tables deserialised with their positions, before validation.
//!
//! Every user-written string keeps its span (`Spanned`) so that the compiler can point at the
//! exact place of an error, down to a column inside an expression. Unknown fields are refused
//! by serde (`deny_unknown_fields`) with their position and the list of known fields.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A spanned string.
pub type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: Option<Str>,
    /// Default parallelism of every node; `--parallelism` overrides it.
    pub parallelism: Option<Spanned<i64>>,
    /// Number of key groups (default 128): the largest parallelism the job can ever rescale to.
    pub max_parallelism: Option<Spanned<i64>>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<ParamDecl>>,
    #[serde(default)]
    pub source: Vec<Spanned<SourceDecl>>,
    #[serde(default)]
    pub operator: Vec<Spanned<OperatorDecl>>,
    #[serde(default)]
    pub sink: Vec<Spanned<SinkDecl>>,
}

/// A declared parameter, filled by `--param name=value` where `${name}` appears in a string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    pub description: Option<String>,
    pub default: Option<String>,
    /// A password or a URL that holds one: a cluster seals its value at submission, as it
    /// does a `--secret-param`, and never shows it.
    #[serde(default)]
    pub secret: bool,
}

/// `[[source]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecl {
    pub name: Str,
    /// `file` or `nexmark-generator`.
    pub connector: Str,
    pub parallelism: Option<Spanned<i64>>,
    // file
    pub path: Option<Str>,
    /// `nexmark` or `json`.
    pub format: Option<Str>,
    /// Columns of the `json` format.
    pub columns: Option<Vec<Spanned<ColumnDecl>>>,
    // generator
    pub events: Option<Spanned<i64>>,
    pub rate: Option<Spanned<i64>>,
    pub base_time: Option<Str>,
    pub throttle: Option<bool>,
    // kafka
    /// `host:port`, comma-separated.
    pub brokers: Option<Str>,
    pub topic: Option<Str>,
    /// `earliest` or `latest`: where to begin without a checkpoint.
    pub start: Option<Str>,
    /// A duration: finish once every partition is read to its end and quiet this long.
    pub end_when_idle: Option<Str>,
    /// json: one row per element of an array.
    pub unnest: Option<Spanned<UnnestDecl>>,
    pub watermark: Option<Spanned<WatermarkDecl>>,
}

/// `{ column = "product_id", table = "dim_product", key = "product_key" }` (`natural`: the
/// dimension's natural key column, by default `column`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionDecl {
    pub column: Str,
    pub table: Str,
    pub key: Str,
    pub natural: Option<Str>,
}

/// `unnest = { path = "items", ordinal = "line_number" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnnestDecl {
    pub path: Str,
    pub ordinal: Option<Str>,
}

/// A column of a JSON source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDecl {
    pub name: Str,
    #[serde(rename = "type")]
    pub data_type: Str,
    pub path: Option<Str>,
}

/// Bounded out-of-orderness watermarks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkDecl {
    pub column: Str,
    /// A duration such as `4s`.
    pub delay: Option<Str>,
    pub idle_timeout: Option<Str>,
}

/// `[[operator]]`: one flat table for every type, so that each field keeps its span; the
/// compiler checks which fields the `type` needs and refuses the ones it does not use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorDecl {
    pub name: Str,
    #[serde(rename = "type")]
    pub kind: Str,
    pub parallelism: Option<Spanned<i64>>,
    /// The input of single-input operators: a node name, or `source.port` for a table of a
    /// multi-output source (`events.bid`).
    pub input: Option<Str>,
    /// Inputs of `union`.
    pub inputs: Option<Vec<Str>>,
    /// Join sides: `"node"` or `"node AS alias"`.
    pub left: Option<Str>,
    pub right: Option<Str>,
    /// filter
    #[serde(rename = "where")]
    pub where_: Option<Str>,
    /// select, joins: output columns (`expr [AS name]`).
    pub columns: Option<Vec<Str>>,
    /// key_by, deduplicate
    pub key: Option<Vec<Str>>,
    /// aggregates
    pub group_by: Option<Vec<Str>>,
    pub aggregates: Option<Vec<Str>>,
    pub window: Option<Spanned<WindowDecl>>,
    /// joins
    pub on: Option<Str>,
    /// interval_join: `right_time` must lie in `[left_time + lower, left_time + upper]`.
    pub left_time: Option<Str>,
    pub right_time: Option<Str>,
    pub lower: Option<Str>,
    pub upper: Option<Str>,
    /// window_join: the window end column on each side (default `window_end`).
    pub left_window_end: Option<Str>,
    pub right_window_end: Option<Str>,
    /// top_n
    pub partition_by: Option<Vec<Str>>,
    pub order_by: Option<Vec<Str>>,
    pub limit: Option<Spanned<i64>>,
    pub rank_column: Option<Str>,
    pub window_end: Option<Str>,
    /// deduplicate; anomaly: the window end column
    pub time: Option<Str>,
    pub keep: Option<Str>,
    /// temporal_join: how long versions are kept behind the watermark (a duration).
    pub retention: Option<Str>,
    /// join, group_aggregate, deduplicate: how long keyed state is kept after its last write,
    /// in processing time (a duration; default forever).
    pub ttl: Option<Str>,
    /// temporal_join: `inner` (default) or `left`.
    pub join_type: Option<Str>,
    /// anomaly: the value scored, its window size and the detector's settings.
    pub value: Option<Str>,
    pub every: Option<Str>,
    pub history: Option<Spanned<i64>>,
    pub min_history: Option<Spanned<i64>>,
    pub threshold: Option<Spanned<f64>>,
    pub min_spread: Option<Spanned<f64>>,
}

/// A window of `window_aggregate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDecl {
    /// `tumble`, `hop`, `session` or `inherit`.
    #[serde(rename = "type")]
    pub kind: Str,
    /// The event-time column (tumble, hop, session).
    pub time: Option<Str>,
    pub size: Option<Str>,
    pub slide: Option<Str>,
    pub gap: Option<Str>,
    /// inherit: the columns of the window a previous window operator assigned.
    pub start: Option<Str>,
    pub end: Option<Str>,
}

/// `[[sink]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDecl {
    pub name: Str,
    pub input: Str,
    /// `file`, `stdout`, `blackhole` or `postgres`.
    pub connector: Str,
    pub path: Option<Str>,
    /// postgres: the connection URL or libpq string.
    pub url: Option<Str>,
    /// postgres: the table, which must exist.
    pub table: Option<Str>,
    /// postgres: the table's key, for an upserted (updating) result.
    pub key: Option<Spanned<Vec<String>>>,
    /// postgres: surrogate-key lookups in dimension tables.
    pub dimensions: Option<Vec<Spanned<DimensionDecl>>>,
    pub parallelism: Option<Spanned<i64>>,
}

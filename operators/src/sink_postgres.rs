//! The PostgreSQL sink: rows staged per checkpoint and published when it completes (see
//! `eddy_postgres` for the protocol). Without checkpointing, each subtask publishes what it
//! staged at the end of its input.

use crate::compile::BuildError;
use crate::format::write_json_row;
use eddy_postgres::{Dimension, Op, PgError, Stager, Target};
use eddy_runtime::checkpoint::{CheckpointId, OperatorSnapshot, SnapshotPoint, SubtaskState};
use eddy_runtime::graph::{JobGraph, NodeId, SinkConnector};
use eddy_runtime::operator::{OpResult, Operator, OperatorError, Output};
use eddy_runtime::types::{Row, RowKind, SchemaRef};
use serde::{Deserialize, Serialize};

/// Bytes a subtask buffers before it stages them.
const FLUSH_BYTES: usize = 1 << 20;

/// What a PostgreSQL sink subtask's snapshot holds: the run whose rows the checkpoint covers.
#[derive(Debug, Serialize, Deserialize)]
struct PgSinkState {
    run: String,
    epoch: CheckpointId,
}

/// The target of a sink node, if it writes to PostgreSQL.
fn target(graph: &JobGraph, node: NodeId) -> Option<Target> {
    match &graph.nodes[node].kind {
        eddy_runtime::graph::NodeKind::Sink(s) => match &s.connector {
            SinkConnector::Postgres {
                url,
                table,
                key,
                dimensions,
            } => Some(Target {
                url: url.clone(),
                table: table.clone(),
                columns: graph
                    .input_schema(node, 0)
                    .fields
                    .iter()
                    .map(|f| f.name.clone())
                    .collect(),
                key: key.clone(),
                dimensions: dimensions
                    .iter()
                    .map(|d| Dimension {
                        column: d.column.clone(),
                        table: d.table.clone(),
                        natural: d.natural.clone(),
                        key: d.key.clone(),
                    })
                    .collect(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Stages and commits are keyed by job and sink: two jobs may write one table.
fn sink_id(graph: &JobGraph, node: NodeId) -> String {
    format!("{}/{}", graph.name, graph.nodes[node].name)
}

/// A PostgreSQL failure as an operator error of the right domain.
fn operator_error(e: PgError) -> OperatorError {
    if e.is_transient() {
        OperatorError::Transient(e.to_string())
    } else {
        OperatorError::User(e.to_string())
    }
}

/// A PostgreSQL failure while building or committing, of the right domain.
fn build_error(e: PgError, sink: &str) -> BuildError {
    let message = format!("sink `{sink}`: {e}");
    if e.is_transient() {
        BuildError::transient(message)
    } else {
        BuildError::new(message)
    }
}

/// Publishes the rows a completed checkpoint covers for one subtask; idempotent.
pub fn commit(graph: &JobGraph, node: NodeId, state: &SubtaskState) -> Result<(), BuildError> {
    if state.state.is_null() {
        return Ok(());
    }
    let Some(target) = target(graph, node) else {
        return Ok(());
    };
    let s = PgSinkState::deserialize(&state.state)
        .map_err(|e| BuildError::internal(format!("unreadable PostgreSQL sink state: {e}")))?;
    eddy_postgres::commit(&target, &sink_id(graph, node), &s.run, s.epoch)
        .map_err(|e| build_error(e, &graph.nodes[node].name))
}

/// One subtask of a PostgreSQL sink.
pub struct PgSink {
    schema: SchemaRef,
    stager: Stager,
    run: String,
    /// Rows are staged for the checkpoint after this one.
    last_checkpoint: CheckpointId,
    exactly_once: bool,
    keyed: bool,
    json: Vec<u8>,
}

impl PgSink {
    /// Subtask `subtask` of sink `node`, continuing after checkpoint `restored_checkpoint`.
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
        restored_checkpoint: CheckpointId,
        exactly_once: bool,
    ) -> Result<PgSink, BuildError> {
        let name = &graph.nodes[node].name;
        let target = target(graph, node).ok_or_else(|| {
            BuildError::new(format!("sink `{name}` does not write to PostgreSQL"))
        })?;
        let keyed = !target.key.is_empty();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let run = format!("{:x}-{:x}-{subtask}", std::process::id(), nanos);
        let stager = Stager::connect(target, &sink_id(graph, node), &run)
            .map_err(|e| build_error(e, name))?;
        Ok(PgSink {
            schema: graph.input_schema(node, 0).clone(),
            stager,
            run,
            last_checkpoint: restored_checkpoint,
            exactly_once,
            keyed,
            json: Vec::with_capacity(512),
        })
    }

    fn stage(&mut self, epoch: CheckpointId) -> OpResult {
        self.stager.flush(epoch).map_err(operator_error)
    }
}

impl Operator for PgSink {
    fn process(&mut self, _input: usize, rows: Vec<Row>, _out: &mut Output) -> OpResult {
        for row in &rows {
            let op = match row.kind {
                RowKind::Insert | RowKind::UpdateAfter => Op::Upsert,
                // The +U that follows replaces the row of the key.
                RowKind::UpdateBefore if self.keyed => continue,
                RowKind::Delete if self.keyed => Op::Delete,
                RowKind::UpdateBefore | RowKind::Delete => {
                    return Err(OperatorError::User(
                        "a PostgreSQL sink without `key` cannot apply a retraction; give the sink the key of its input (e.g. the window and group columns)".into(),
                    ))
                }
            };
            self.json.clear();
            write_json_row(&self.schema, &row.values, &mut self.json);
            self.stager.push(op, &self.json);
        }
        if self.stager.buffered_bytes() >= FLUSH_BYTES {
            self.stage(self.last_checkpoint + 1)?;
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        let epoch = self.last_checkpoint + 1;
        self.stage(epoch)?;
        if !self.exactly_once {
            // No checkpoints: the end of input is the only commit.
            self.stager.commit(epoch).map_err(operator_error)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, point: SnapshotPoint) -> OpResult<OperatorSnapshot> {
        let epoch = match point {
            SnapshotPoint::Barrier(id) => id,
            // The final checkpoint gets a later id than any barrier this subtask saw.
            SnapshotPoint::EndOfInput => self.last_checkpoint + 1,
        };
        self.stage(epoch)?;
        self.last_checkpoint = epoch;
        let state = PgSinkState {
            run: self.run.clone(),
            epoch,
        };
        Ok(OperatorSnapshot {
            state: serde_json::to_value(state)
                .map_err(|e| OperatorError::Message(e.to_string()))?,
            ..Default::default()
        })
    }
}

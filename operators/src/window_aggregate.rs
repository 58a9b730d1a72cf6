//! Tumbling, hopping and inherited event-time window aggregation.
//!
//! Per key, the open windows live in a map state keyed by window end; a timer at `end - 1` (the
//! window's last millisecond, Flink's `maxTimestamp`) fires it when the watermark passes. Output:
//! group columns, `window_start`, `window_end`, then the aggregates. A row whose every window has
//! already fired is late: it is counted and, when the job reads the window's `late` output,
//! sent there unchanged (Flink's side output for late data); otherwise dropped, as Flink does
//! without allowed lateness.

use crate::aggregate::{create_all, results_into, update_all, Accs, AggregateSpec};
use crate::compile::{
    aggregate_specs, column, compile_named, eval_key, input_schema, key_group, BuildError,
};
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, NamedExpr, NodeId, WindowSpec};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, MapState, TimerState};
use eddy_runtime::types::{Row, RowKind, Timestamp, Value, MIN_TIMESTAMP};
use serde::{Deserialize, Serialize};

/// How rows are assigned to windows.
#[derive(Clone, Debug)]
pub enum Assigner {
    Tumble {
        time: usize,
        size: i64,
    },
    Hop {
        time: usize,
        size: i64,
        slide: i64,
    },
    /// Windows given by a previous window operator's start and end columns.
    Inherit {
        start: usize,
        end: usize,
    },
}

impl Assigner {
    pub fn new(
        window: &WindowSpec,
        schema: &eddy_runtime::types::Schema,
    ) -> Result<Assigner, BuildError> {
        Ok(match window {
            WindowSpec::Tumble { time, size } => Assigner::Tumble {
                time: column(schema, time)?,
                size: *size,
            },
            WindowSpec::Hop { time, size, slide } => Assigner::Hop {
                time: column(schema, time)?,
                size: *size,
                slide: *slide,
            },
            WindowSpec::Inherit { start, end } => Assigner::Inherit {
                start: column(schema, start)?,
                end: column(schema, end)?,
            },
            WindowSpec::Session { .. } => {
                return Err(BuildError::new(
                    "session windows are built by SessionWindow",
                ))
            }
        })
    }

    /// Calls `f(start, end)` for every window the row belongs to.
    #[inline]
    pub fn assign(&self, row: &[Value], mut f: impl FnMut(Timestamp, Timestamp)) {
        match *self {
            Assigner::Tumble { time, size } => {
                if let Some(ts) = row[time].as_timestamp() {
                    let start = ts - ts.rem_euclid(size);
                    f(start, start + size);
                }
            }
            Assigner::Hop { time, size, slide } => {
                if let Some(ts) = row[time].as_timestamp() {
                    let mut start = ts - ts.rem_euclid(slide);
                    while start > ts - size {
                        f(start, start + size);
                        start -= slide;
                    }
                }
            }
            Assigner::Inherit { start, end } => {
                if let (Some(s), Some(e)) = (row[start].as_timestamp(), row[end].as_timestamp()) {
                    f(s, e);
                }
            }
        }
    }
}

/// The state of one window of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WindowState {
    key: Vec<Value>,
    accs: Accs,
}

/// Window aggregation over tumbling, hopping or inherited windows.
pub struct WindowAggregate<B: KeyedStateBackend> {
    keys: Vec<Expr>,
    assigner: Assigner,
    aggregates: Vec<AggregateSpec>,
    /// Open windows per key, by (end, start): windows from sessions can share an end.
    windows: B::Map<(Timestamp, Timestamp), WindowState>,
    timers: B::Timers,
    watermark: Timestamp,
    max_parallelism: u32,
    late: u64,
    /// Whether late rows go out on port 1 (`NAME.late`), because someone reads it.
    late_output: bool,
}

impl<B: KeyedStateBackend> WindowAggregate<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        window: &WindowSpec,
        group_by: &[NamedExpr],
        aggregates: &[NamedExpr],
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        Ok(WindowAggregate {
            keys: compile_named(group_by, &Scope::single(schema))?,
            assigner: Assigner::new(window, schema)?,
            aggregates: aggregate_specs(graph, node, aggregates)?,
            windows: backend.map_state("windows"),
            timers: backend.timers("window-timers"),
            watermark: MIN_TIMESTAMP,
            max_parallelism,
            late: 0,
            late_output: graph.nodes[node].outputs.len() > 1
                && !graph.consumers(node, 1).is_empty(),
        })
    }
}

impl<B: KeyedStateBackend> Operator for WindowAggregate<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        for row in rows {
            let sign = if row.kind.is_addition() { 1 } else { -1 };
            let key = eval_key(&self.keys, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let mut assigned = false;
            let watermark = self.watermark;
            let (windows, timers, aggregates) =
                (&mut self.windows, &mut self.timers, &self.aggregates);
            self.assigner.assign(&row.values, |start, end| {
                if end - 1 <= watermark {
                    return; // this window already fired
                }
                assigned = true;
                let created = windows.update(kg, &key, &(end, start), |slot| {
                    let created = slot.is_none();
                    let state = slot.get_or_insert_with(|| WindowState {
                        key: key.clone(),
                        accs: create_all(aggregates),
                    });
                    update_all(aggregates, &mut state.accs, &row.values, sign);
                    created
                });
                // One timer per window: it exists from the window's first row on.
                if created {
                    timers.register(end - 1, kg, &key);
                }
            });
            if !assigned {
                self.late += 1;
                if self.late_output {
                    out.emit(1, row);
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        self.watermark = watermark;
        for (time, kg, key) in self.timers.pop_due(watermark) {
            let end = time + 1;
            let mut starts = Vec::new();
            self.windows.for_each(kg, &key, |&(e, s), _| {
                if e == end {
                    starts.push(s);
                }
            });
            for start in starts {
                if let Some(state) = self.windows.remove(kg, &key, &(end, start)) {
                    let mut values = state.key;
                    values.push(Value::Timestamp(start));
                    values.push(Value::Timestamp(end));
                    results_into(&self.aggregates, &state.accs, &mut values);
                    out.emit(0, Row::with_kind(RowKind::Insert, values));
                }
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.late > 0 {
            tracing::warn!(late = self.late, "window aggregate dropped late rows");
        }
        Ok(())
    }
}

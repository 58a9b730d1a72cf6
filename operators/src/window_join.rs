//! The window join: rows of both sides that share a key and a window meet when the window
//! closes. State per key and window end; a timer at `end - 1` joins and drops both sides.

use crate::compile::{column, input_schema, BuildError};
use crate::join::JoinCommon;
use eddy_runtime::graph::{JobGraph, JoinKind, JoinSpec, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, MapState, TimerState};
use eddy_runtime::types::{Row, Timestamp, Value, MIN_TIMESTAMP};

/// Rows of one side buffered for one window.
type Buffered = Vec<Vec<Value>>;

/// Inner join of two windowed streams on key and window.
pub struct WindowJoin<B: KeyedStateBackend> {
    common: JoinCommon,
    /// The window end column of each side.
    ends: [usize; 2],
    sides: [B::Map<Timestamp, Buffered>; 2],
    timers: B::Timers,
    watermark: Timestamp,
    late: u64,
}

impl<B: KeyedStateBackend> WindowJoin<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let JoinKind::Window {
            left_end,
            right_end,
        } = &spec.kind
        else {
            return Err(BuildError::new("not a window join"));
        };
        Ok(WindowJoin {
            common: JoinCommon::new(graph, node, spec, max_parallelism)?,
            ends: [
                column(input_schema(graph, node, 0), left_end)?,
                column(input_schema(graph, node, 1), right_end)?,
            ],
            sides: [backend.map_state("left"), backend.map_state("right")],
            timers: backend.timers("window-join-timers"),
            watermark: MIN_TIMESTAMP,
            late: 0,
        })
    }
}

impl<B: KeyedStateBackend> Operator for WindowJoin<B> {
    fn process(&mut self, input: usize, rows: Vec<Row>, _out: &mut Output) -> OpResult {
        for row in rows {
            let Some(end) = row.values[self.ends[input]].as_timestamp() else {
                continue;
            };
            if end - 1 <= self.watermark {
                self.late += 1;
                continue;
            }
            let Some((key, kg)) = self.common.key(input, &row.values) else {
                continue;
            };
            let created = self.sides[input].update(kg, &key, &end, |slot| {
                let created = slot.is_none();
                slot.get_or_insert_with(Vec::new).push(row.values);
                created
            });
            // A window's timer is registered by the first row of either side (registering twice
            // is harmless: timers are de-duplicated).
            if created {
                self.timers.register(end - 1, kg, &key);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        self.watermark = watermark;
        for (time, kg, key) in self.timers.pop_due(watermark) {
            let end = time + 1;
            let left = self.sides[0].remove(kg, &key, &end).unwrap_or_default();
            let right = self.sides[1].remove(kg, &key, &end).unwrap_or_default();
            for l in &left {
                for r in &right {
                    self.common.emit_pair(l, r, out);
                }
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.late > 0 {
            tracing::warn!(late = self.late, "window join dropped late rows");
        }
        Ok(())
    }
}

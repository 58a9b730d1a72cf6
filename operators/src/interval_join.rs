//! The interval join: a left row and a right row with equal keys meet when
//! `left_time + lower <= right_time <= left_time + upper`. Matches are emitted as soon as both
//! rows are there; each row is kept only until the watermark shows no partner can still come.

use crate::compile::{column, input_schema, BuildError};
use crate::join::JoinCommon;
use eddy_runtime::graph::{JobGraph, JoinKind, JoinSpec, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, ListState, TimerState};
use eddy_runtime::types::{Row, Timestamp, Value, MIN_TIMESTAMP};

/// Inner join of two streams on key and a time interval.
pub struct IntervalJoin<B: KeyedStateBackend> {
    common: JoinCommon,
    /// The time column of each side.
    times: [usize; 2],
    lower: i64,
    upper: i64,
    sides: [B::List<Vec<Value>>; 2],
    timers: B::Timers,
    watermark: Timestamp,
    late: u64,
}

impl<B: KeyedStateBackend> IntervalJoin<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let JoinKind::Interval {
            left_time,
            right_time,
            lower,
            upper,
        } = &spec.kind
        else {
            return Err(BuildError::new("not an interval join"));
        };
        Ok(IntervalJoin {
            common: JoinCommon::new(graph, node, spec, max_parallelism)?,
            times: [
                column(input_schema(graph, node, 0), left_time)?,
                column(input_schema(graph, node, 1), right_time)?,
            ],
            lower: *lower,
            upper: *upper,
            sides: [backend.list_state("left"), backend.list_state("right")],
            timers: backend.timers("interval-join-timers"),
            watermark: MIN_TIMESTAMP,
            late: 0,
        })
    }
}

/// The time after which a row of `side` at `t` can no longer find a partner.
fn expiry(side: usize, t: Timestamp, lower: i64, upper: i64) -> Timestamp {
    if side == 0 {
        t.saturating_add(upper)
    } else {
        t.saturating_sub(lower)
    }
}

impl<B: KeyedStateBackend> Operator for IntervalJoin<B> {
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let other = 1 - input;
        for row in rows {
            let Some(t) = row.values[self.times[input]].as_timestamp() else {
                continue;
            };
            let Some((key, kg)) = self.common.key(input, &row.values) else {
                continue;
            };
            let (lower, upper, other_time) = (self.lower, self.upper, self.times[other]);
            let common = &mut self.common;
            self.sides[other].for_each(kg, &key, |stored| {
                let Some(s) = stored[other_time].as_timestamp() else {
                    return;
                };
                let (lt, rt, l, r) = if input == 0 {
                    (t, s, &row.values[..], &stored[..])
                } else {
                    (s, t, &stored[..], &row.values[..])
                };
                if lt.saturating_add(lower) <= rt && rt <= lt.saturating_add(upper) {
                    common.emit_pair(l, r, out);
                }
            });
            // Keep the row only while a partner can still arrive on the other side.
            let expiry = expiry(input, t, self.lower, self.upper);
            if expiry <= self.watermark {
                self.late += 1;
                continue;
            }
            self.sides[input].add(kg, &key, row.values);
            self.timers.register(expiry, kg, &key);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, _out: &mut Output) -> OpResult {
        self.watermark = watermark;
        for (_, kg, key) in self.timers.pop_due(watermark) {
            for side in 0..2 {
                let time = self.times[side];
                let (lower, upper) = (self.lower, self.upper);
                self.sides[side].retain(kg, &key, |row| {
                    let t = row[time].as_timestamp().unwrap_or(Timestamp::MIN);
                    expiry(side, t, lower, upper) > watermark
                });
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.late > 0 {
            tracing::warn!(
                late = self.late,
                "interval join matched late rows without keeping them"
            );
        }
        Ok(())
    }
}

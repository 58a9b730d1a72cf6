//! Session windows: per key, rows less than `gap` apart form one session, which ends `gap` after
//! its last row. Sessions that touch merge (Flink's `TimeWindow.intersects` is inclusive, and so
//! is this). Output: group columns, `window_start`, `window_end`, then the aggregates.

use crate::aggregate::{create_all, results_into, update_all, Accs, AggregateSpec};
use crate::compile::{
    aggregate_specs, column, compile_named, eval_key, input_schema, key_group, BuildError,
};
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, NamedExpr, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, TimerState, ValueState};
use eddy_runtime::types::{Row, Timestamp, Value, MIN_TIMESTAMP};
use serde::{Deserialize, Serialize};

/// One open session of a key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    start: Timestamp,
    /// Exclusive: last row time + gap.
    end: Timestamp,
    accs: Accs,
}

/// Session-window aggregation.
pub struct SessionWindow<B: KeyedStateBackend> {
    keys: Vec<Expr>,
    time: usize,
    gap: i64,
    aggregates: Vec<AggregateSpec>,
    sessions: B::Value<Vec<Session>>,
    timers: B::Timers,
    watermark: Timestamp,
    max_parallelism: u32,
    late: u64,
}

impl<B: KeyedStateBackend> SessionWindow<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        time: &str,
        gap: i64,
        group_by: &[NamedExpr],
        aggregates: &[NamedExpr],
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        Ok(SessionWindow {
            keys: compile_named(group_by, &Scope::single(schema))?,
            time: column(schema, time)?,
            gap,
            aggregates: aggregate_specs(graph, node, aggregates)?,
            sessions: backend.value_state("sessions"),
            timers: backend.timers("session-timers"),
            watermark: MIN_TIMESTAMP,
            max_parallelism,
            late: 0,
        })
    }
}

impl<B: KeyedStateBackend> Operator for SessionWindow<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, _out: &mut Output) -> OpResult {
        for row in rows {
            let Some(ts) = row.values[self.time].as_timestamp() else {
                continue;
            };
            let sign = if row.kind.is_addition() { 1 } else { -1 };
            let key = eval_key(&self.keys, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let (aggregates, watermark, gap) = (&self.aggregates, self.watermark, self.gap);
            // Some(end) if the row joined a live session whose end is new (needs a timer).
            let outcome = self.sessions.update(kg, &key, |slot| {
                let sessions = slot.get_or_insert_with(Vec::new);
                let touches =
                    |s: &Session, lo: Timestamp, hi: Timestamp| s.start <= hi && s.end >= lo;
                // The bounds after merging, found first: as in Flink, a row is late only if the
                // session it would end up in has already fired.
                let (mut lo, mut hi) = (ts, ts + gap);
                loop {
                    let (l, h) = sessions
                        .iter()
                        .filter(|s| touches(s, lo, hi))
                        .fold((lo, hi), |(l, h), s| (l.min(s.start), h.max(s.end)));
                    if (l, h) == (lo, hi) {
                        break;
                    }
                    (lo, hi) = (l, h);
                }
                if hi - 1 <= watermark {
                    if sessions.is_empty() {
                        *slot = None;
                    }
                    return Err(());
                }
                let known_end = sessions.iter().any(|s| touches(s, lo, hi) && s.end == hi);
                let mut merged = Session {
                    start: lo,
                    end: hi,
                    accs: create_all(aggregates),
                };
                update_all(aggregates, &mut merged.accs, &row.values, sign);
                for s in std::mem::take(sessions) {
                    if touches(&s, lo, hi) {
                        for (spec, (acc, other)) in
                            aggregates.iter().zip(merged.accs.iter_mut().zip(s.accs))
                        {
                            spec.merge(acc, other);
                        }
                    } else {
                        sessions.push(s);
                    }
                }
                sessions.push(merged);
                Ok((!known_end).then_some(hi))
            });
            match outcome {
                Err(()) => self.late += 1,
                Ok(Some(end)) => self.timers.register(end - 1, kg, &key),
                Ok(None) => {}
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        self.watermark = watermark;
        for (time, kg, key) in self.timers.pop_due(watermark) {
            // A timer of a session that has since grown finds nothing to fire.
            let mut fired = Vec::new();
            self.sessions.update(kg, &key, |slot| {
                if let Some(sessions) = slot {
                    sessions.retain(|s| {
                        if s.end - 1 <= time {
                            fired.push(s.clone());
                            false
                        } else {
                            true
                        }
                    });
                    if sessions.is_empty() {
                        *slot = None;
                    }
                }
            });
            for s in fired {
                let mut values = key.clone();
                values.push(Value::Timestamp(s.start));
                values.push(Value::Timestamp(s.end));
                results_into(&self.aggregates, &s.accs, &mut values);
                out.emit(0, Row::insert(values));
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.late > 0 {
            tracing::warn!(late = self.late, "session window dropped late rows");
        }
        Ok(())
    }
}

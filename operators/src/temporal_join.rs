//! The event-time temporal join (Flink's `JOIN rates FOR SYSTEM_TIME AS OF orders.ts`): the
//! right input is a versioned table, a row per key and version time; a left row meets the
//! version in force at its time, the latest with `right_time <= left_time`.
//!
//! A left row waits until the watermark passes its time: by then every version at or before it
//! has arrived (the right input's watermark is part of the operator's), so the answer does not
//! depend on which input happened to be read first. Waiting rows are kept per (key, time),
//! each with a timer, so a watermark only touches the rows it releases. A left row already
//! behind the watermark (late) is joined at once. Versions are kept while they may still be
//! needed: every version newer than `watermark - retention`, and the one in force at that time.

use crate::compile::{column, input_schema, BuildError};
use crate::join::JoinCommon;
use eddy_runtime::graph::{JobGraph, JoinKind, JoinSpec, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{KeyedStateBackend, ListState, TimerState, ValueState};
use eddy_runtime::types::{Row, Timestamp, Value, MIN_TIMESTAMP};

/// The versions of one key, by version time (ascending).
type Versions = Vec<(Timestamp, Vec<Value>)>;

/// The temporal join operator: input 0 is the left stream, input 1 the versioned table.
/// Waiting rows, versions and timers are keyed state, so checkpoints hold them.
pub struct TemporalJoin<B: KeyedStateBackend> {
    common: JoinCommon,
    /// The time column of each side.
    times: [usize; 2],
    retention: i64,
    left_outer: bool,
    /// NULLs standing for a missing version (left outer join).
    no_version: Vec<Value>,
    versions: B::Value<Versions>,
    /// Left rows waiting for the watermark, per key followed by their time.
    waiting: B::List<Vec<Value>>,
    timers: B::Timers,
    watermark: Timestamp,
}

impl<B: KeyedStateBackend> TemporalJoin<B> {
    /// Builds the operator of `node` from a [`JoinKind::Temporal`] spec (any other kind is an
    /// error), its state in `backend`.
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let JoinKind::Temporal {
            left_time,
            right_time,
            retention,
            left_outer,
        } = &spec.kind
        else {
            return Err(BuildError::new("not a temporal join"));
        };
        let right_width = input_schema(graph, node, 1).len();
        Ok(TemporalJoin {
            common: JoinCommon::new(graph, node, spec, max_parallelism)?,
            times: [
                column(input_schema(graph, node, 0), left_time)?,
                column(input_schema(graph, node, 1), right_time)?,
            ],
            retention: *retention,
            left_outer: *left_outer,
            no_version: vec![Value::Null; right_width],
            versions: backend.value_state("versions"),
            waiting: backend.list_state("waiting"),
            timers: backend.timers("temporal-join-timers"),
            watermark: MIN_TIMESTAMP,
        })
    }

    /// Joins one left row with the version in force at `t`.
    fn emit(
        &mut self,
        left: &[Value],
        versions: Option<&Versions>,
        t: Timestamp,
        out: &mut Output,
    ) {
        let version = versions.and_then(|v| {
            let n = v.partition_point(|(vt, _)| *vt <= t);
            n.checked_sub(1).map(|i| &v[i].1)
        });
        match version {
            Some(right) => self.common.emit_pair(left, right, out),
            None if self.left_outer => {
                let nulls = std::mem::take(&mut self.no_version);
                self.common.emit_pair(left, &nulls, out);
                self.no_version = nulls;
            }
            None => {}
        }
    }
}

/// Drops the versions no left row can need any more: keeps those newer than `horizon` and the
/// one in force at it.
fn prune(versions: &mut Versions, horizon: Timestamp) {
    let in_force = versions.partition_point(|(t, _)| *t <= horizon);
    if in_force > 1 {
        versions.drain(..in_force - 1);
    }
}

impl<B: KeyedStateBackend> Operator for TemporalJoin<B> {
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let horizon = self.watermark.saturating_sub(self.retention);
        for row in rows {
            let Some(t) = row.values[self.times[input]].as_timestamp() else {
                // No time, so no version is in force: an outer join keeps it with NULLs.
                if input == 0 && self.left_outer {
                    self.emit(&row.values, None, MIN_TIMESTAMP, out);
                }
                continue;
            };
            let Some((key, kg)) = self.common.key(input, &row.values) else {
                if input == 0 && self.left_outer {
                    self.emit(&row.values, None, t, out);
                }
                continue;
            };
            if input == 1 {
                self.versions.update(kg, &key, |slot| {
                    let versions = slot.get_or_insert_with(Vec::new);
                    let at = versions.partition_point(|(vt, _)| *vt < t);
                    match versions.get_mut(at) {
                        Some((vt, v)) if *vt == t => *v = row.values,
                        _ => versions.insert(at, (t, row.values)),
                    }
                    prune(versions, horizon);
                });
            } else if t <= self.watermark {
                // Late: every version it may meet has arrived.
                let versions = self.versions.get(kg, &key);
                self.emit(&row.values, versions.as_ref(), t, out);
            } else {
                let mut waiting_key = key;
                waiting_key.push(Value::Timestamp(t));
                self.waiting.add(kg, &waiting_key, row.values);
                self.timers.register(t, kg, &waiting_key);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        self.watermark = watermark;
        for (t, kg, mut waiting_key) in self.timers.pop_due(watermark) {
            let mut rows = Vec::new();
            self.waiting
                .for_each(kg, &waiting_key, |row| rows.push(row.clone()));
            self.waiting.clear(kg, &waiting_key);
            waiting_key.pop();
            let key = waiting_key;
            let versions = self.versions.get(kg, &key);
            for row in rows {
                self.emit(&row, versions.as_ref(), t, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_version_in_force_at_the_horizon() {
        let mut v: Versions = (0..10).map(|i| (i * 10, vec![Value::Int(i)])).collect();
        prune(&mut v, 35);
        assert_eq!(v.first().map(|(t, _)| *t), Some(30));
        prune(&mut v, 5);
        assert_eq!(v.len(), 7, "nothing before the one in force");
        prune(&mut v, 1_000);
        assert_eq!(v.len(), 1, "the latest stays");
    }
}

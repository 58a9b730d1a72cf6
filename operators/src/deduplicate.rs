//! Deduplication: per key, keep the first or the last row in event time
//! (`ROW_NUMBER() OVER (PARTITION BY key ORDER BY time [DESC]) = 1`).
//!
//! Keeping the last row, a row with an equal time replaces the kept one (Flink keeps the later
//! arrival); keeping the first, only a strictly earlier row does. Changes are emitted once per key
//! per input batch as -U/+U (or +I for a new key).

use crate::compile::{column, compile_keys, eval_key, input_schema, key_group, BuildError};
use crate::ttl::Ttl;
use eddy_runtime::expr::Expr;
use eddy_runtime::graph::{DeduplicateSpec, JobGraph, Keep, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{Key, KeyedStateBackend, ValueState};
use eddy_runtime::types::{Row, RowKind, Timestamp, Value};
use rustc_hash::FxHashMap;

/// Keeps one row per key.
pub struct Deduplicate<B: KeyedStateBackend> {
    keys: Vec<Expr>,
    time: usize,
    keep: Keep,
    kept: B::Value<(Timestamp, Vec<Value>)>,
    max_parallelism: u32,
    before: FxHashMap<Key, (u32, Option<Vec<Value>>)>,
    /// Keys not written for this long are forgotten: their next row is new again.
    ttl: Option<Ttl<B>>,
}

impl<B: KeyedStateBackend> Deduplicate<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &DeduplicateSpec,
        ttl: Option<Ttl<B>>,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        Ok(Deduplicate {
            keys: compile_keys(&spec.key, schema)?,
            time: column(schema, &spec.time)?,
            keep: spec.keep,
            kept: backend.value_state("kept"),
            max_parallelism,
            before: FxHashMap::default(),
            ttl,
        })
    }
}

impl<B: KeyedStateBackend> Operator for Deduplicate<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let now = self.ttl.as_mut().map(|t| t.expire_values(&mut self.kept));
        for row in rows {
            let Some(t) = row.values[self.time].as_timestamp() else {
                continue;
            };
            let key = eval_key(&self.keys, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let (keep, before) = (self.keep, &mut self.before);
            self.kept.update(kg, &key, |slot| {
                let replace = match slot {
                    None => true,
                    Some((kept, _)) => match keep {
                        Keep::Last => t >= *kept,
                        Keep::First => t < *kept,
                    },
                };
                if replace {
                    if !before.contains_key(&key) {
                        before.insert(key.clone(), (kg, slot.as_ref().map(|(_, v)| v.clone())));
                    }
                    *slot = Some((t, row.values));
                }
            });
        }
        for (key, (kg, previous)) in std::mem::take(&mut self.before) {
            if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
                ttl.touch(now, kg, &key);
            }
            let Some((_, current)) = self.kept.get(kg, &key) else {
                continue;
            };
            match previous {
                Some(p) if p == current => {}
                Some(p) => {
                    out.emit(0, Row::with_kind(RowKind::UpdateBefore, p));
                    out.emit(0, Row::with_kind(RowKind::UpdateAfter, current));
                }
                None => out.emit(0, Row::with_kind(RowKind::Insert, current)),
            }
        }
        Ok(())
    }
}

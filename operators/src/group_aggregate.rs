//! Unbounded GROUP BY aggregation: one result row per key, updated as rows arrive.
//!
//! The output is a changelog: +I for a new key, -U/+U when a key's result changes, -D when a
//! key's last row is retracted. Like Flink's mini-batch, results are emitted once per key per
//! input batch rather than once per row, which cuts the changelog downstream without delaying
//! results beyond the batch.

use crate::aggregate::{create_all, results_into, update_all, Accs, AggregateSpec};
use crate::compile::{
    aggregate_specs, compile_named, eval_key, input_schema, key_group, BuildError,
};
use crate::ttl::Ttl;
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, NamedExpr, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{Key, KeyedStateBackend, ValueState};
use eddy_runtime::types::{Row, RowKind, Value};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The state of one group.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    accs: Accs,
    /// Rows added minus rows retracted: the group disappears at zero.
    rows: i64,
    /// The result row last emitted, to retract it on change.
    emitted: Option<Vec<Value>>,
}

/// GROUP BY aggregation without windows.
pub struct GroupAggregate<B: KeyedStateBackend> {
    keys: Vec<Expr>,
    aggregates: Vec<AggregateSpec>,
    groups: B::Value<Group>,
    max_parallelism: u32,
    /// Keys touched by the current batch, with their key group.
    touched: FxHashMap<Key, u32>,
    /// Groups not updated for this long are dropped (without a retraction, as in Flink).
    ttl: Option<Ttl<B>>,
}

impl<B: KeyedStateBackend> GroupAggregate<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        group_by: &[NamedExpr],
        aggregates: &[NamedExpr],
        ttl: Option<Ttl<B>>,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        Ok(GroupAggregate {
            keys: compile_named(group_by, &Scope::single(schema))?,
            aggregates: aggregate_specs(graph, node, aggregates)?,
            groups: backend.value_state("groups"),
            max_parallelism,
            touched: FxHashMap::default(),
            ttl,
        })
    }
}

impl<B: KeyedStateBackend> Operator for GroupAggregate<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let now = self.ttl.as_mut().map(|t| t.expire_values(&mut self.groups));
        for row in rows {
            let sign = if row.kind.is_addition() { 1 } else { -1 };
            let key = eval_key(&self.keys, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let aggregates = &self.aggregates;
            self.groups.update(kg, &key, |slot| {
                let group = slot.get_or_insert_with(|| Group {
                    accs: create_all(aggregates),
                    rows: 0,
                    emitted: None,
                });
                update_all(aggregates, &mut group.accs, &row.values, sign);
                group.rows += sign;
            });
            self.touched.entry(key).or_insert(kg);
        }
        // Emit one change per touched key.
        for (key, kg) in self.touched.drain() {
            if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
                ttl.touch(now, kg, &key);
            }
            let aggregates = &self.aggregates;
            self.groups.update(kg, &key, |slot| {
                let Some(group) = slot else { return };
                if group.rows <= 0 {
                    if let Some(previous) = group.emitted.take() {
                        out.emit(0, Row::with_kind(RowKind::Delete, previous));
                    }
                    *slot = None;
                    return;
                }
                let mut values = key.clone();
                results_into(aggregates, &group.accs, &mut values);
                match group.emitted.take() {
                    Some(previous) if previous == values => group.emitted = Some(previous),
                    Some(previous) => {
                        out.emit(0, Row::with_kind(RowKind::UpdateBefore, previous));
                        out.emit(0, Row::with_kind(RowKind::UpdateAfter, values.clone()));
                        group.emitted = Some(values);
                    }
                    None => {
                        out.emit(0, Row::with_kind(RowKind::Insert, values.clone()));
                        group.emitted = Some(values);
                    }
                }
            });
        }
        Ok(())
    }
}

//! Top-N: `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) <= N`, continuously or per window.
//!
//! Continuous top-N keeps each partition's best N rows in order and emits a changelog: once per
//! partition per input batch, the difference between the rows (and row numbers) emitted before
//! and now. Rows that compare equal keep arrival order, the earlier ranking first, as Flink's
//! rank operator does. With `window_end` set, rows are ranked per window and each window's final
//! top N is emitted once when it closes (append-only, Flink's window top-N).

use crate::compile::{
    column, compile_expr, compile_keys, eval_key, input_schema, key_group, BuildError,
};
use crate::ttl::Ttl;
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, NodeId, TopNSpec};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{Key, KeyedStateBackend, MapState, TimerState, ValueState};
use eddy_runtime::types::{sort_order, Row, RowKind, Timestamp, Value, MIN_TIMESTAMP};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;

/// A ranked row: its sort key (evaluated once) and its values.
type Entry = (Vec<Value>, Vec<Value>);

/// Top-N per partition.
pub struct TopN<B: KeyedStateBackend> {
    partition: Vec<Expr>,
    order: Vec<Expr>,
    descending: Vec<bool>,
    limit: usize,
    with_rank: bool,
    window_end: Option<usize>,
    lists: B::Value<Vec<Entry>>,
    windows: B::Map<Timestamp, Vec<Entry>>,
    timers: B::Timers,
    watermark: Timestamp,
    max_parallelism: u32,
    /// Partitions touched by the current batch, with their rows before it.
    before: FxHashMap<Key, (u32, Vec<Entry>)>,
    late: u64,
    /// Continuous top-N: partitions whose rows did not change for this long are dropped.
    ttl: Option<Ttl<B>>,
}

impl<B: KeyedStateBackend> TopN<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &TopNSpec,
        ttl: Option<Ttl<B>>,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        let schema = input_schema(graph, node, 0);
        let scope = Scope::single(schema);
        Ok(TopN {
            partition: compile_keys(&spec.partition_by, schema)?,
            order: spec
                .order_by
                .iter()
                .map(|o| compile_expr(&o.expr, &scope))
                .collect::<Result<_, _>>()?,
            descending: spec.order_by.iter().map(|o| o.descending).collect(),
            limit: spec.limit,
            with_rank: spec.rank_column.is_some(),
            window_end: spec
                .window_end
                .as_deref()
                .map(|c| column(schema, c))
                .transpose()?,
            lists: backend.value_state("top"),
            windows: backend.map_state("window-top"),
            timers: backend.timers("window-top-timers"),
            watermark: MIN_TIMESTAMP,
            max_parallelism,
            before: FxHashMap::default(),
            late: 0,
            ttl,
        })
    }

    /// Inserts an entry into a sorted list capped at `limit`; false if it did not make the cut.
    fn insert(order_desc: &[bool], limit: usize, list: &mut Vec<Entry>, entry: Entry) -> bool {
        let cmp = |a: &[Value], b: &[Value]| -> Ordering {
            for ((x, y), desc) in a.iter().zip(b).zip(order_desc) {
                let o = sort_order(x, y);
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        };
        // Equal rows keep arrival order: the new one goes after them.
        let pos = list.partition_point(|e| cmp(&e.0, &entry.0) != Ordering::Greater);
        if pos >= limit {
            return false;
        }
        list.insert(pos, entry);
        list.truncate(limit);
        true
    }

    fn ranked(&self, entry: &Entry, rank: usize) -> Vec<Value> {
        let mut values = entry.1.clone();
        if self.with_rank {
            values.push(Value::Int(rank as i64 + 1));
        }
        values
    }

    /// Emits the change of one partition from `before` to `after`.
    fn emit_diff(&self, before: &[Entry], after: &[Entry], out: &mut Output) {
        if self.with_rank {
            for i in 0..before.len().max(after.len()) {
                let (b, a) = (before.get(i), after.get(i));
                if b.map(|e| &e.1) == a.map(|e| &e.1) {
                    continue;
                }
                if let Some(b) = b {
                    out.emit(0, Row::with_kind(RowKind::UpdateBefore, self.ranked(b, i)));
                }
                if let Some(a) = a {
                    out.emit(0, Row::with_kind(RowKind::UpdateAfter, self.ranked(a, i)));
                }
            }
        } else {
            // As multisets: equal rows may be ranked more than once.
            let mut count: FxHashMap<&[Value], i64> = FxHashMap::default();
            for b in before {
                *count.entry(&b.1).or_insert(0) -= 1;
            }
            for a in after {
                *count.entry(&a.1).or_insert(0) += 1;
            }
            for (values, n) in count {
                let kind = if n < 0 {
                    RowKind::Delete
                } else {
                    RowKind::Insert
                };
                for _ in 0..n.abs() {
                    out.emit(0, Row::with_kind(kind, values.to_vec()));
                }
            }
        }
    }
}

impl<B: KeyedStateBackend> Operator for TopN<B> {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let now = self.ttl.as_mut().map(|t| t.expire_values(&mut self.lists));
        for row in rows {
            let key = eval_key(&self.partition, &row.values);
            let kg = key_group(&key, self.max_parallelism);
            let sort_key = eval_key(&self.order, &row.values);
            let (desc, limit) = (&self.descending, self.limit);
            if let Some(end_col) = self.window_end {
                let Some(end) = row.values[end_col].as_timestamp() else {
                    continue;
                };
                if end - 1 <= self.watermark {
                    self.late += 1;
                    continue;
                }
                let created = self.windows.update(kg, &key, &end, |slot| {
                    let created = slot.is_none();
                    let list = slot.get_or_insert_with(Vec::new);
                    Self::insert(desc, limit, list, (sort_key, row.values));
                    created
                });
                if created {
                    self.timers.register(end - 1, kg, &key);
                }
                continue;
            }
            let before = &mut self.before;
            self.lists.update(kg, &key, |slot| {
                let list = slot.get_or_insert_with(Vec::new);
                if !before.contains_key(&key) {
                    before.insert(key.clone(), (kg, list.clone()));
                }
                Self::insert(desc, limit, list, (sort_key, row.values));
            });
        }
        for (key, (kg, before)) in std::mem::take(&mut self.before) {
            let after = self.lists.get(kg, &key).unwrap_or_default();
            if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
                if after != before {
                    ttl.touch(now, kg, &key);
                }
            }
            self.emit_diff(&before, &after, out);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> OpResult {
        self.watermark = watermark;
        if self.window_end.is_none() {
            return Ok(());
        }
        for (time, kg, key) in self.timers.pop_due(watermark) {
            if let Some(list) = self.windows.remove(kg, &key, &(time + 1)) {
                for (i, entry) in list.iter().enumerate() {
                    out.emit(0, Row::insert(self.ranked(entry, i)));
                }
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if self.late > 0 {
            tracing::warn!(late = self.late, "window top-n dropped late rows");
        }
        Ok(())
    }
}

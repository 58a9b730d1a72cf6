//! The regular (unwindowed) inner join of two append-only streams, and the parts every join
//! shares: key extraction per side, the residual condition and the output projection over the
//! concatenated row `left ++ right`.
//!
//! Each side's rows are kept per key, forever without a state TTL (as in Flink), or until they
//! are older than the TTL; a new row on one side is matched against all kept rows of the other
//! side with the same key. Rows with a NULL key never match, as in SQL.

use crate::compile::{
    compile_expr, compile_keys, compile_named, eval_key, input_schema, key_group, BuildError,
};
use crate::ttl::Ttl;
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, JoinSpec, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{Key, KeyedStateBackend, ListState};
use eddy_runtime::types::{Row, Timestamp, Value};

/// What all join operators share.
pub struct JoinCommon {
    /// Key expressions per side (0 = left, 1 = right).
    pub keys: [Vec<Expr>; 2],
    pub condition: Option<Expr>,
    pub columns: Vec<Expr>,
    pub max_parallelism: u32,
    scratch: Vec<Value>,
}

impl JoinCommon {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        max_parallelism: u32,
    ) -> Result<JoinCommon, BuildError> {
        let left = input_schema(graph, node, 0);
        let right = input_schema(graph, node, 1);
        let scope = Scope::new(vec![
            (Some(spec.left_alias.as_str()), left),
            (Some(spec.right_alias.as_str()), right),
        ]);
        Ok(JoinCommon {
            keys: [
                compile_keys(&spec.left_key, left)?,
                compile_keys(&spec.right_key, right)?,
            ],
            condition: spec
                .condition
                .as_deref()
                .map(|c| compile_expr(c, &scope))
                .transpose()?,
            columns: compile_named(&spec.columns, &scope)?,
            max_parallelism,
            scratch: Vec::new(),
        })
    }

    /// The key of a row of `side` and its key group, or None if a key value is NULL.
    pub fn key(&self, side: usize, row: &[Value]) -> Option<(Key, u32)> {
        let key = eval_key(&self.keys[side], row);
        if key.iter().any(Value::is_null) {
            return None;
        }
        let kg = key_group(&key, self.max_parallelism);
        Some((key, kg))
    }

    /// Emits the joined row of `left` and `right` if the condition holds.
    #[inline]
    pub fn emit_pair(&mut self, left: &[Value], right: &[Value], out: &mut Output) {
        self.scratch.clear();
        self.scratch.extend_from_slice(left);
        self.scratch.extend_from_slice(right);
        if let Some(c) = &self.condition {
            if !c.eval_predicate(&self.scratch) {
                return;
            }
        }
        let values = self.columns.iter().map(|e| e.eval(&self.scratch)).collect();
        out.emit(0, Row::insert(values));
    }
}

/// The regular inner join.
pub struct RegularJoin<B: KeyedStateBackend> {
    common: JoinCommon,
    /// Rows kept per side; with a TTL, each ends with the time it was added.
    sides: [B::List<Vec<Value>>; 2],
    /// Rows are dropped this long after they were added.
    ttl: Option<Ttl<B>>,
}

impl<B: KeyedStateBackend> RegularJoin<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        ttl: Option<Ttl<B>>,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        Ok(RegularJoin {
            common: JoinCommon::new(graph, node, spec, max_parallelism)?,
            sides: [backend.list_state("left"), backend.list_state("right")],
            ttl,
        })
    }

    /// Drops the rows older than the TTL of the keys whose timer is due; returns the time.
    fn expire(&mut self) -> Option<Timestamp> {
        let ttl = self.ttl.as_mut()?;
        let now = ttl.now();
        let added = |row: &Vec<Value>| row.last().and_then(Value::as_timestamp).unwrap_or(now);
        for due in ttl.due(now) {
            let mut oldest = None::<Timestamp>;
            for side in &mut self.sides {
                side.retain(due.kg, &due.key, |row| {
                    let at = added(row);
                    let keep = !ttl.expired(at, now);
                    if keep {
                        oldest = Some(oldest.map_or(at, |o| o.min(at)));
                    }
                    keep
                });
            }
            if let Some(oldest) = oldest {
                ttl.keep_until(oldest.saturating_add(ttl.ttl()), &due);
            }
        }
        Some(now)
    }
}

impl<B: KeyedStateBackend> Operator for RegularJoin<B> {
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let now = self.expire();
        let other = 1 - input;
        // The columns of a stored row, without the time a TTL adds.
        let stamp = usize::from(now.is_some());
        for row in rows {
            let Some((key, kg)) = self.common.key(input, &row.values) else {
                continue;
            };
            let common = &mut self.common;
            self.sides[other].for_each(kg, &key, |stored| {
                let stored = &stored[..stored.len() - stamp];
                if input == 0 {
                    common.emit_pair(&row.values, stored, out);
                } else {
                    common.emit_pair(stored, &row.values, out);
                }
            });
            let mut values = row.values;
            if let (Some(ttl), Some(now)) = (&mut self.ttl, now) {
                values.push(Value::Timestamp(now));
                ttl.touch(now, kg, &key);
            }
            self.sides[input].add(kg, &key, values);
        }
        Ok(())
    }
}

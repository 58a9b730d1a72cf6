//! The regular (unwindowed) inner join of two append-only streams, and the parts every join
//! shares: key extraction per side, the residual condition and the output projection over the
//! concatenated row `left ++ right`.
//!
//! Each side's rows are kept per key forever (as Flink does without a state TTL); a new row on
//! one side is matched against all rows of the other side with the same key. Rows with a NULL
//! key never match, as in SQL.

use crate::compile::{
    compile_expr, compile_keys, compile_named, eval_key, input_schema, key_group, BuildError,
};
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, JoinSpec, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::state::{Key, KeyedStateBackend, ListState};
use eddy_runtime::types::{Row, Value};

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
    /// Rows kept per side.
    sides: [B::List<Vec<Value>>; 2],
}

impl<B: KeyedStateBackend> RegularJoin<B> {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        spec: &JoinSpec,
        mut backend: B,
        max_parallelism: u32,
    ) -> Result<Self, BuildError> {
        Ok(RegularJoin {
            common: JoinCommon::new(graph, node, spec, max_parallelism)?,
            sides: [backend.list_state("left"), backend.list_state("right")],
        })
    }
}

impl<B: KeyedStateBackend> Operator for RegularJoin<B> {
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        let other = 1 - input;
        for row in rows {
            let Some((key, kg)) = self.common.key(input, &row.values) else {
                continue;
            };
            let common = &mut self.common;
            self.sides[other].for_each(kg, &key, |stored| {
                if input == 0 {
                    common.emit_pair(&row.values, stored, out);
                } else {
                    common.emit_pair(stored, &row.values, out);
                }
            });
            self.sides[input].add(kg, &key, row.values);
        }
        Ok(())
    }
}

//! Operators without state: filter, select (map / project), pass-through (key-by, union).

use crate::compile::{compile_expr, compile_named, input_schema, BuildError};
use eddy_runtime::expr::{Expr, Scope};
use eddy_runtime::graph::{JobGraph, NamedExpr, NodeId};
use eddy_runtime::operator::{OpResult, Operator, Output};
use eddy_runtime::types::Row;

/// Keeps the rows whose predicate is TRUE (NULL counts as false, as in SQL WHERE).
pub struct Filter {
    predicate: Expr,
}

impl Filter {
    pub fn new(graph: &JobGraph, node: NodeId, predicate: &str) -> Result<Filter, BuildError> {
        let schema = input_schema(graph, node, 0);
        Ok(Filter {
            predicate: compile_expr(predicate, &Scope::single(schema))?,
        })
    }
}

impl Operator for Filter {
    fn process(&mut self, _input: usize, mut rows: Vec<Row>, out: &mut Output) -> OpResult {
        rows.retain(|r| self.predicate.eval_predicate(&r.values));
        out.emit_batch(0, rows);
        Ok(())
    }
}

/// Computes the output columns of each row. Bare column references move values instead of
/// evaluating, so a projection costs little more than the copy of the kept columns.
pub struct Select {
    columns: Vec<Expr>,
    /// For each output column, the input column it is a plain copy of.
    plain: Vec<Option<usize>>,
}

impl Select {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        columns: &[NamedExpr],
    ) -> Result<Select, BuildError> {
        let schema = input_schema(graph, node, 0);
        let columns = compile_named(columns, &Scope::single(schema))?;
        let plain = columns.iter().map(Expr::as_column).collect();
        Ok(Select { columns, plain })
    }
}

impl Operator for Select {
    fn process(&mut self, _input: usize, mut rows: Vec<Row>, out: &mut Output) -> OpResult {
        for row in rows.iter_mut() {
            let values: Vec<_> = self
                .columns
                .iter()
                .zip(&self.plain)
                .map(|(expr, plain)| match plain {
                    Some(i) => row.values[*i].clone(),
                    None => expr.eval(&row.values),
                })
                .collect();
            row.values = values;
        }
        out.emit_batch(0, rows);
        Ok(())
    }
}

/// Forwards every row unchanged: key-by (the partitioning is on its input edge) and union.
pub struct PassThrough;

impl Operator for PassThrough {
    fn process(&mut self, _input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult {
        out.emit_batch(0, rows);
        Ok(())
    }
}

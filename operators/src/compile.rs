//! Compiling a node's expressions against its input schemas, shared by all operators.

use eddy_runtime::expr::{self, AggregateCall, Expr, Scope};
use eddy_runtime::graph::{JobGraph, NamedExpr, NodeId};
use eddy_runtime::types::Schema;

/// An operator could not be built from its graph node, with whose fault it is (the runtime's
/// type: the executor decides restarts by it).
pub use eddy_runtime::error::BuildError;

/// Compiles one scalar expression in a scope.
pub fn compile_expr(text: &str, scope: &Scope) -> Result<Expr, BuildError> {
    expr::parse_expr(text)
        .and_then(|ast| expr::compile(&ast, scope))
        .map_err(|e| BuildError::new(format!("`{text}`: {e}")))
}

/// Compiles key expressions over one schema.
pub fn compile_keys(keys: &[String], schema: &Schema) -> Result<Vec<Expr>, BuildError> {
    keys.iter()
        .map(|k| compile_expr(k, &Scope::single(schema)))
        .collect()
}

/// Compiles named expressions (select lists, group keys) over one schema.
pub fn compile_named(items: &[NamedExpr], scope: &Scope) -> Result<Vec<Expr>, BuildError> {
    items.iter().map(|i| compile_expr(&i.expr, scope)).collect()
}

/// The aggregates of a node over its input 0, ready to accumulate: MIN and MAX keep every value
/// only when that input carries retractions.
pub fn aggregate_specs(
    graph: &JobGraph,
    node: NodeId,
    items: &[NamedExpr],
) -> Result<Vec<crate::aggregate::AggregateSpec>, BuildError> {
    let retracting = graph.input_updating(node, 0);
    Ok(compile_aggregates(items, input_schema(graph, node, 0))?
        .into_iter()
        .map(|c| crate::aggregate::AggregateSpec::new(c, retracting))
        .collect())
}

/// Compiles aggregate calls over one schema.
fn compile_aggregates(
    items: &[NamedExpr],
    schema: &Schema,
) -> Result<Vec<AggregateCall>, BuildError> {
    items
        .iter()
        .map(|i| {
            expr::parse_expr(&i.expr)
                .and_then(|ast| expr::compile_aggregate(&ast, &Scope::single(schema)))
                .map_err(|e| BuildError::new(format!("`{}`: {e}", i.expr)))
        })
        .collect()
}

/// The input schema of a node's input.
pub fn input_schema(graph: &JobGraph, node: NodeId, input: usize) -> &Schema {
    graph.input_schema(node, input)
}

/// The index of a column in a schema, or an error naming it.
pub fn column(schema: &Schema, name: &str) -> Result<usize, BuildError> {
    schema
        .index_of(name)
        .ok_or_else(|| BuildError::new(format!("no column `{name}` (have: {})", schema.names())))
}

/// Evaluates key expressions into a key.
#[inline]
pub fn eval_key(keys: &[Expr], row: &[eddy_runtime::types::Value]) -> eddy_runtime::state::Key {
    keys.iter().map(|k| k.eval(row)).collect()
}

/// The key group of a key.
#[inline]
pub fn key_group(key: &[eddy_runtime::types::Value], max_parallelism: u32) -> u32 {
    eddy_runtime::keygroup::key_group_of(eddy_runtime::keygroup::hash_key(key), max_parallelism)
}

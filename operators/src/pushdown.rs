//! Projection pushdown: which columns of a stream its consumers can ever read, so that a source
//! does not decode the others (a Nexmark bid's `extra`, `url` and `channel` are most of its bytes).
//!
//! The analysis is conservative: any consumer it does not understand needs every column.

use eddy_runtime::expr::{parse_expr, Ast, AstKind, Scope};
use eddy_runtime::graph::{JobGraph, NodeId, NodeKind, WindowSpec};
use eddy_runtime::types::Schema;

/// For each column of output `port` of `node`: whether some consumer may read it.
pub fn required_columns(graph: &JobGraph, node: NodeId, port: usize) -> Vec<bool> {
    let width = graph.nodes[node].outputs[port].schema.len();
    let mut need = vec![false; width];
    for (consumer, input) in graph.consumers(node, port) {
        match consumer_needs(graph, consumer, input) {
            Some(cols) => need.iter_mut().zip(cols).for_each(|(n, c)| *n |= c),
            None => return vec![true; width],
        }
    }
    need
}

/// The columns one consumer reads from its input, or None if it may read any.
fn consumer_needs(graph: &JobGraph, consumer: NodeId, input: usize) -> Option<Vec<bool>> {
    let schema = graph.input_schema(consumer, input);
    let mut need = vec![false; schema.len()];
    let mut uses = |text: &str| -> Option<()> { mark(&parse_expr(text).ok()?, schema, &mut need) };
    match &graph.nodes[consumer].kind {
        NodeKind::Select { columns } => {
            for c in columns {
                uses(&c.expr)?;
            }
        }
        NodeKind::Filter { predicate } => {
            uses(predicate)?;
            pass_through(graph, consumer, &mut need);
        }
        NodeKind::KeyBy { key } => {
            for k in key {
                uses(k)?;
            }
            pass_through(graph, consumer, &mut need);
        }
        NodeKind::Union => pass_through(graph, consumer, &mut need),
        NodeKind::WindowAggregate {
            window,
            group_by,
            aggregates,
        } => {
            for e in group_by.iter().chain(aggregates) {
                uses(&e.expr)?;
            }
            let columns: Vec<&String> = match window {
                WindowSpec::Tumble { time, .. }
                | WindowSpec::Hop { time, .. }
                | WindowSpec::Session { time, .. } => vec![time],
                WindowSpec::Inherit { start, end } => vec![start, end],
            };
            for c in columns {
                need[schema.index_of(c)?] = true;
            }
            // Late rows leave on port 1 as they came: its readers' needs count too.
            if graph.nodes[consumer].outputs.len() > 1 {
                for (n, c) in need.iter_mut().zip(required_columns(graph, consumer, 1)) {
                    *n |= c;
                }
            }
        }
        NodeKind::GroupAggregate {
            group_by,
            aggregates,
            ..
        } => {
            for e in group_by.iter().chain(aggregates) {
                uses(&e.expr)?;
            }
        }
        _ => return None,
    }
    Some(need)
}

/// A node that forwards its input rows needs what its own consumers need.
fn pass_through(graph: &JobGraph, node: NodeId, need: &mut [bool]) {
    for (n, c) in need.iter_mut().zip(required_columns(graph, node, 0)) {
        *n |= c;
    }
}

/// Marks the columns an expression refers to; None for anything it cannot resolve.
fn mark(ast: &Ast, schema: &Schema, need: &mut [bool]) -> Option<()> {
    if let AstKind::Column {
        qualifier: None,
        name,
    } = &ast.kind
    {
        let (index, _) = Scope::single(schema)
            .resolve(None, name, ast.span.clone())
            .ok()?;
        need[index] = true;
    } else if matches!(ast.kind, AstKind::Column { .. }) {
        return None;
    }
    for child in ast.children() {
        mark(child, schema, need)?;
    }
    Some(())
}

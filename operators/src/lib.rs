//! Eddy's operators, sources and sinks, and the [`Factory`] that builds them from a job graph.
//!
//! One file per operator. Each operator compiles the expressions of its graph node against its
//! input schemas when it is built, so per-record work is evaluation only.

pub mod aggregate;
mod anomaly;
pub mod checkpointing;
mod compile;
pub mod dead_letter;
mod deduplicate;
pub mod format;
mod group_aggregate;
mod interval_join;
mod join;
mod pushdown;
mod session_window;
mod sink;
mod sink_postgres;
mod source;
mod source_kafka;
mod stateless;
mod temporal_join;
mod top_n;
pub mod ttl;
mod window_aggregate;
mod window_join;

use checkpointing::{Restored, StateBackendChoice};
use dead_letter::DeadLetters;
use eddy_runtime::checkpoint::SubtaskState;
use eddy_runtime::exec::TaskFactory;
use eddy_runtime::graph::{
    JobGraph, JoinKind, NodeId, NodeKind, SinkConnector, SinkSpec, WindowSpec,
};
use eddy_runtime::keygroup::KeyGroupRange;
use eddy_runtime::operator::{Operator, Source};
use eddy_runtime::state::{KeyedStateBackend, MemoryBackend};
use eddy_state_rocksdb::{Restore, RocksBackend};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use ttl::{Clock, Ttl};

pub use compile::{compile_expr, compile_keys, BuildError};
pub use sink::{is_directory as sink_is_directory, SinkFiles};

/// Settings that apply to a whole run rather than to one node.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Where malformed input lines go (created on the first one).
    pub dead_letter_path: std::path::PathBuf,
    /// Where keyed operators keep state.
    pub state: StateBackendChoice,
    /// Sinks publish output only when a checkpoint covering it completes.
    pub exactly_once: bool,
    /// The checkpoint or savepoint to start from.
    pub restore: Option<Restored>,
    /// The processing time state TTL reads.
    pub clock: Clock,
}

impl RunSettings {
    /// The id of the checkpoint the run starts from; 0 for a fresh start.
    pub fn restored_checkpoint(&self) -> u64 {
        self.restore.as_ref().map_or(0, |r| r.metadata.checkpoint)
    }
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            dead_letter_path: "dead-letter.jsonl".into(),
            state: StateBackendChoice::Memory,
            exactly_once: false,
            restore: None,
            clock: Clock::Wall,
        }
    }
}

/// Runs `graph` to the end of its input on this process's executor, with in-memory state and
/// malformed input lines written to `dead_letters`; how many there were. For what needs no
/// checkpoints: tests and the `eddy sql` shell.
pub fn run_to_end(
    graph: &JobGraph,
    dead_letters: std::path::PathBuf,
) -> Result<u64, eddy_runtime::exec::ExecError> {
    let factory = Factory::new(RunSettings {
        dead_letter_path: dead_letters,
        ..Default::default()
    });
    eddy_runtime::exec::execute(
        graph,
        &factory,
        &eddy_runtime::exec::ExecOptions::default(),
        &eddy_runtime::exec::CancelHandle::default(),
    )?;
    Ok(factory.dead_letter_count())
}

/// Builds operator instances for the executor. Shared resources that all subtasks of a node use
/// (a sink's output file, the dead-letter file) live here so that each is opened once.
pub struct Factory {
    settings: RunSettings,
    dead_letters: Arc<DeadLetters>,
    sinks: Mutex<HashMap<NodeId, Arc<SinkFiles>>>,
}

impl Factory {
    pub fn new(settings: RunSettings) -> Factory {
        let dead_letters = Arc::new(DeadLetters::new(settings.dead_letter_path.clone()));
        Factory {
            settings,
            dead_letters,
            sinks: Mutex::default(),
        }
    }

    /// Malformed records seen so far, over all sources.
    pub fn dead_letter_count(&self) -> u64 {
        self.dead_letters.count()
    }

    /// The settings this factory was made with.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    fn build_operator(
        &self,
        graph: &JobGraph,
        id: NodeId,
        subtask: u32,
    ) -> Result<Box<dyn Operator>, BuildError> {
        let node = &graph.nodes[id];
        let range = KeyGroupRange::of_subtask(subtask, node.parallelism, graph.max_parallelism);
        if checkpointing::is_keyed(&node.kind) {
            return match &self.settings.state {
                StateBackendChoice::Memory => {
                    keyed(graph, id, MemoryBackend::new(range), &self.settings.clock)
                }
                StateBackendChoice::RocksDb { dir, options } => {
                    let owner = checkpointing::owner_name(node, subtask);
                    let restore = self.settings.restore.as_ref().map(|r| Restore {
                        store: &r.store,
                        handles: r.keyed(node, range),
                        reuse_files: r.incremental_base,
                    });
                    let backend =
                        RocksBackend::open(&dir.join(&owner), &owner, range, options, restore)
                            .map_err(|e| checkpointing::open_error(node, e))?;
                    let op = keyed(graph, id, backend.clone(), &self.settings.clock)?;
                    backend.check_restored_states().map_err(|e| {
                        BuildError::new(format!(
                            "the checkpoint does not fit operator `{}`: {e}",
                            node.name
                        ))
                    })?;
                    Ok(Box::new(checkpointing::Stateful {
                        op,
                        backend,
                        name: node.name.clone(),
                    }))
                }
            };
        }
        Ok(match &node.kind {
            NodeKind::Filter { predicate } => {
                Box::new(stateless::Filter::new(graph, id, predicate)?)
            }
            NodeKind::Select { columns } => Box::new(stateless::Select::new(graph, id, columns)?),
            NodeKind::KeyBy { .. } | NodeKind::Union => Box::new(stateless::PassThrough),
            NodeKind::Sink(spec) if matches!(spec.connector, SinkConnector::Postgres { .. }) => {
                Box::new(sink_postgres::PgSink::new(
                    graph,
                    id,
                    subtask,
                    self.settings.restored_checkpoint(),
                    self.settings.exactly_once,
                )?)
            }
            NodeKind::Sink(spec) => {
                // Every old subtask's state: the sink keeps the table rows of its key groups.
                let restored: Vec<&SubtaskState> = match &self.settings.restore {
                    Some(r) => r
                        .metadata
                        .operator(&node.name)
                        .into_iter()
                        .flat_map(|op| &op.subtasks)
                        .collect(),
                    None => Vec::new(),
                };
                let output = if sink::is_directory(&spec.connector) {
                    sink::SinkOutput::parts(
                        &spec.connector,
                        &node.name,
                        subtask,
                        self.settings.exactly_once,
                    )
                } else {
                    if self.settings.exactly_once && !sink::is_special(&spec.connector) {
                        return Err(BuildError::new(format!(
                            "sink `{}`: with checkpointing, `path` must be a directory (end it with `/`) so that each checkpoint publishes its own files",
                            node.name
                        )));
                    }
                    let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
                    sink::SinkOutput::Shared(Arc::clone(sinks.entry(id).or_insert_with(|| {
                        Arc::new(SinkFiles::new(&spec.connector, node.parallelism))
                    })))
                };
                let from = self.settings.restored_checkpoint();
                Box::new(sink::Sink::new(graph, id, range, output, from, &restored)?)
            }
            _ => {
                return Err(BuildError::new(format!(
                    "`{}` is a {}, not an operator",
                    node.name,
                    node.kind.type_name()
                )))
            }
        })
    }
}

/// Builds a keyed operator over the given state backend.
fn keyed<B: KeyedStateBackend>(
    graph: &JobGraph,
    id: NodeId,
    mut backend: B,
    clock: &Clock,
) -> Result<Box<dyn Operator>, BuildError> {
    let node = &graph.nodes[id];
    let max_p = graph.max_parallelism;
    Ok(match &node.kind {
        NodeKind::WindowAggregate {
            window: WindowSpec::Session { time, gap },
            group_by,
            aggregates,
        } => Box::new(session_window::SessionWindow::new(
            graph, id, time, *gap, group_by, aggregates, backend, max_p,
        )?),
        NodeKind::WindowAggregate {
            window,
            group_by,
            aggregates,
        } => Box::new(window_aggregate::WindowAggregate::new(
            graph, id, window, group_by, aggregates, backend, max_p,
        )?),
        NodeKind::GroupAggregate {
            group_by,
            aggregates,
            ttl,
        } => {
            let ttl = Ttl::new(*ttl, &mut backend, clock);
            Box::new(group_aggregate::GroupAggregate::new(
                graph, id, group_by, aggregates, ttl, backend, max_p,
            )?)
        }
        NodeKind::Join(spec) => match &spec.kind {
            JoinKind::Regular { ttl } => {
                let ttl = Ttl::new(*ttl, &mut backend, clock);
                Box::new(join::RegularJoin::new(
                    graph, id, spec, ttl, backend, max_p,
                )?)
            }
            JoinKind::Window { .. } => Box::new(window_join::WindowJoin::new(
                graph, id, spec, backend, max_p,
            )?),
            JoinKind::Interval { .. } => Box::new(interval_join::IntervalJoin::new(
                graph, id, spec, backend, max_p,
            )?),
            JoinKind::Temporal { .. } => Box::new(temporal_join::TemporalJoin::new(
                graph, id, spec, backend, max_p,
            )?),
        },
        NodeKind::TopN(spec) => {
            let ttl = Ttl::new(spec.ttl, &mut backend, clock);
            Box::new(top_n::TopN::new(graph, id, spec, ttl, backend, max_p)?)
        }
        NodeKind::Deduplicate(spec) => {
            let ttl = Ttl::new(spec.ttl, &mut backend, clock);
            Box::new(deduplicate::Deduplicate::new(
                graph, id, spec, ttl, backend, max_p,
            )?)
        }
        NodeKind::Anomaly(spec) => {
            Box::new(anomaly::Anomaly::new(graph, id, spec, backend, max_p)?)
        }
        _ => {
            return Err(BuildError::new(format!(
                "`{}` keeps no keyed state",
                node.name
            )))
        }
    })
}

impl TaskFactory for Factory {
    fn source(
        &self,
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
    ) -> Result<Box<dyn Source>, BuildError> {
        let positions = self.settings.restore.as_ref().map(|r| {
            let n = &graph.nodes[node];
            let range = KeyGroupRange::of_subtask(subtask, n.parallelism, graph.max_parallelism);
            r.subtasks(n, range).collect::<Vec<_>>()
        });
        source::build(
            graph,
            node,
            subtask,
            &self.dead_letters,
            positions.as_deref(),
        )
    }

    fn operator(
        &self,
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
    ) -> Result<Box<dyn Operator>, BuildError> {
        self.build_operator(graph, node, subtask)
    }

    fn restored_watermark(
        &self,
        graph: &JobGraph,
        node: NodeId,
        subtask: u32,
    ) -> Option<eddy_runtime::types::Timestamp> {
        let n = &graph.nodes[node];
        let range = KeyGroupRange::of_subtask(subtask, n.parallelism, graph.max_parallelism);
        self.settings.restore.as_ref()?.watermark(n, range)
    }

    fn commit(
        &self,
        graph: &JobGraph,
        node: NodeId,
        state: &SubtaskState,
    ) -> Result<(), BuildError> {
        match graph.nodes[node].kind {
            NodeKind::Sink(SinkSpec {
                connector: SinkConnector::Postgres { .. },
            }) => sink_postgres::commit(graph, node, state),
            NodeKind::Sink(_) => sink::commit(state),
            _ => Ok(()),
        }
    }
}

//! Sinks: JSON lines to a file or standard output, or nowhere (blackhole).
//!
//! All subtasks of a file sink write one file, each appending whole batches of lines under a
//! lock, into a hidden `.NAME.inprogress` file that is renamed to NAME when the last subtask
//! finishes, so a reader never mistakes a partial result for a finished one.
//!
//! An updating input (a changelog with retractions) is materialised: the sink keeps each row
//! with its count, applies -U/-D to it, and writes the final table at the end of input, which
//! is what Flink's answer files hold. (Streaming changelog output to files comes with
//! exactly-once sinks.)

use crate::compile::BuildError;
use crate::format::write_json_row;
use eddy_runtime::graph::{JobGraph, NodeId, SinkConnector};
use eddy_runtime::operator::{OpResult, Operator, OperatorError, Output};
use eddy_runtime::types::{Row, SchemaRef, Value};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Bytes a subtask buffers before it takes the lock and writes.
const FLUSH_BYTES: usize = 256 * 1024;

/// Where a sink's lines go.
enum Destination {
    File {
        path: PathBuf,
        staging: PathBuf,
        file: Option<File>,
    },
    Stdout,
    Blackhole,
}

/// The output shared by all subtasks of one sink node.
pub struct SinkFiles {
    destination: Mutex<(Destination, u32)>,
}

impl SinkFiles {
    /// The output of a sink with `parallelism` subtasks.
    pub fn new(connector: &SinkConnector, parallelism: u32) -> SinkFiles {
        let destination = match connector {
            SinkConnector::File { path } => {
                let path = PathBuf::from(path);
                // A device or pipe (/dev/null, /dev/stdout, a FIFO) is written in place: renaming
                // a staging file over it would replace the device.
                let special = std::fs::metadata(&path).is_ok_and(|m| !m.is_file() && !m.is_dir());
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "output".into());
                let staging = if special {
                    path.clone()
                } else {
                    path.with_file_name(format!(".{name}.inprogress"))
                };
                Destination::File {
                    path,
                    staging,
                    file: None,
                }
            }
            SinkConnector::Stdout => Destination::Stdout,
            SinkConnector::Blackhole => Destination::Blackhole,
        };
        SinkFiles {
            destination: Mutex::new((destination, parallelism)),
        }
    }

    fn write(&self, bytes: &[u8]) -> OpResult {
        let mut guard = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        match &mut guard.0 {
            Destination::File { staging, file, .. } => {
                if file.is_none() {
                    if let Some(parent) = staging.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent).map_err(|e| {
                            OperatorError::io(format!("cannot create `{}`", parent.display()), e)
                        })?;
                    }
                    *file = Some(File::create(&*staging).map_err(|e| {
                        OperatorError::io(format!("cannot create `{}`", staging.display()), e)
                    })?);
                }
                let f = file.as_mut().expect("opened above");
                f.write_all(bytes).map_err(|e| {
                    OperatorError::io(format!("cannot write `{}`", staging.display()), e)
                })
            }
            Destination::Stdout => std::io::stdout()
                .lock()
                .write_all(bytes)
                .map_err(|e| OperatorError::io("cannot write to standard output", e)),
            Destination::Blackhole => Ok(()),
        }
    }

    /// One subtask is done; the last one publishes the file.
    fn finish(&self) -> OpResult {
        let mut guard = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        guard.1 = guard.1.saturating_sub(1);
        if guard.1 > 0 {
            return Ok(());
        }
        match &mut guard.0 {
            Destination::File {
                path,
                staging,
                file,
            } => {
                let f = match file.take() {
                    Some(f) => f,
                    None => File::create(&*staging).map_err(|e| {
                        OperatorError::io(format!("cannot create `{}`", staging.display()), e)
                    })?,
                };
                if staging == path {
                    return Ok(()); // a device or pipe, written in place
                }
                f.sync_all().map_err(|e| {
                    OperatorError::io(format!("cannot sync `{}`", staging.display()), e)
                })?;
                std::fs::rename(&*staging, &*path).map_err(|e| {
                    OperatorError::io(format!("cannot publish `{}`", path.display()), e)
                })
            }
            Destination::Stdout => std::io::stdout()
                .flush()
                .map_err(|e| OperatorError::io("cannot write to standard output", e)),
            Destination::Blackhole => Ok(()),
        }
    }
}

/// One subtask of a sink.
pub struct Sink {
    schema: SchemaRef,
    files: std::sync::Arc<SinkFiles>,
    blackhole: bool,
    buffer: Vec<u8>,
    /// For updating input: each row of the result with its multiplicity.
    table: Option<FxHashMap<Vec<Value>, i64>>,
}

impl Sink {
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        files: std::sync::Arc<SinkFiles>,
    ) -> Result<Sink, BuildError> {
        let blackhole = matches!(
            &graph.nodes[node].kind,
            eddy_runtime::graph::NodeKind::Sink(s) if matches!(s.connector, SinkConnector::Blackhole)
        );
        Ok(Sink {
            schema: graph.input_schema(node, 0).clone(),
            files,
            blackhole,
            buffer: Vec::with_capacity(FLUSH_BYTES + 4096),
            table: graph.input_updating(node, 0).then(FxHashMap::default),
        })
    }

    fn flush(&mut self) -> OpResult {
        if !self.buffer.is_empty() {
            self.files.write(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

impl Operator for Sink {
    fn process(&mut self, _input: usize, rows: Vec<Row>, _out: &mut Output) -> OpResult {
        if let Some(table) = &mut self.table {
            for row in rows {
                let delta = if row.kind.is_addition() { 1 } else { -1 };
                match table.entry(row.values) {
                    Entry::Occupied(mut e) => {
                        *e.get_mut() += delta;
                        if *e.get() == 0 {
                            e.remove();
                        }
                    }
                    Entry::Vacant(e) => {
                        e.insert(delta);
                    }
                }
            }
            return Ok(());
        }
        if self.blackhole {
            return Ok(());
        }
        for row in &rows {
            write_json_row(&self.schema, &row.values, &mut self.buffer);
        }
        if self.buffer.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        if let Some(table) = self.table.take() {
            if !self.blackhole {
                for (values, count) in table {
                    for _ in 0..count.max(0) {
                        write_json_row(&self.schema, &values, &mut self.buffer);
                        if self.buffer.len() >= FLUSH_BYTES {
                            self.flush()?;
                        }
                    }
                }
            }
        }
        self.flush()?;
        self.files.finish()
    }
}

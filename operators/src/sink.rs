//! Sinks: JSON lines to files or standard output, or nowhere (blackhole).
//!
//! **A directory** (a path ending in `/`, or an existing directory) gets part files, each
//! written by one subtask under a hidden staging name (`.part-….inprogress`) and published by a
//! rename to `part-<checkpoint>-<subtask>-<sink>.jsonl`. With checkpointing this is a two-phase commit:
//! at a barrier the subtask closes and syncs its staging file and lists it in its snapshot; when
//! the checkpoint completes, the coordinator renames what the checkpoint lists ([`commit`]), and
//! after a crash the restore renames it again if needed (a rename of a file already published
//! is skipped), so the committed files hold every row exactly once. Rows after the last
//! completed checkpoint stay hidden and are produced again by the replay.
//!
//! **A single file** is shared by all subtasks, each appending whole batches of lines under a
//! lock, into a hidden `.NAME.inprogress` file that is renamed to NAME when the last subtask
//! finishes. It cannot commit per checkpoint, so checkpointed jobs must write to a directory.
//!
//! An updating input (a changelog with retractions) is materialised: the sink keeps each row
//! with its count, applies -U/-D to it, and writes the final table at the end of input, which
//! is what Flink's answer files hold. The table is part of the sink's snapshot.

use crate::compile::BuildError;
use crate::format::write_json_row;
use eddy_runtime::checkpoint::{CheckpointId, OperatorSnapshot, SnapshotPoint, SubtaskState};
use eddy_runtime::graph::{JobGraph, NodeId, SinkConnector};
use eddy_runtime::keygroup::{hash_key, key_group_of, KeyGroupRange};
use eddy_runtime::operator::{OpResult, Operator, OperatorError, Output};
use eddy_runtime::types::{Row, SchemaRef, Value};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
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
            // PostgreSQL sinks never share a destination (`sink_postgres` builds them).
            SinkConnector::Blackhole | SinkConnector::Postgres { .. } => Destination::Blackhole,
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

/// Whether a sink writes part files into a directory.
pub fn is_directory(connector: &SinkConnector) -> bool {
    match connector {
        SinkConnector::File { path } => path.ends_with('/') || Path::new(path).is_dir(),
        _ => false,
    }
}

/// Whether a sink writes somewhere that cannot be staged and published (standard output, a
/// device, nowhere): exactly-once does not apply.
pub fn is_special(connector: &SinkConnector) -> bool {
    match connector {
        SinkConnector::File { path } => {
            std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
        }
        SinkConnector::Stdout | SinkConnector::Blackhole | SinkConnector::Postgres { .. } => true,
    }
}

/// A staged part file and the name it is published under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Staged {
    staging: PathBuf,
    committed: PathBuf,
}

impl Staged {
    /// Whether a commit already renamed it into place.
    fn is_published(&self) -> bool {
        self.committed.exists() && !self.staging.exists()
    }
}

/// What a sink subtask's snapshot holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SinkState {
    /// Files to publish when the checkpoint completes.
    pending: Vec<Staged>,
    /// The materialised table of an updating input.
    #[serde(default)]
    table: SnapshotTable,
}

/// The materialised table of an updating sink in a snapshot: each row with its multiplicity,
/// encoded with bincode (base64 in the JSON of the snapshot). As a JSON tree (an object per
/// value), q9's table of 100k rows took seconds to snapshot at every checkpoint and again to
/// parse at a restore. Rows written as JSON by earlier versions are read too.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum SnapshotTable {
    Encoded(String),
    Rows(Vec<(Vec<Value>, i64)>),
}

impl Default for SnapshotTable {
    fn default() -> Self {
        SnapshotTable::Rows(Vec::new())
    }
}

const BINCODE: bincode::config::Configuration = bincode::config::standard();

impl SnapshotTable {
    fn encode(table: &FxHashMap<Vec<Value>, i64>) -> Result<SnapshotTable, String> {
        /// The rows as a sequence of pairs, which is what `Rows` decodes.
        struct Pairs<'a>(&'a FxHashMap<Vec<Value>, i64>);
        impl Serialize for Pairs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        use base64::Engine;
        let bytes = bincode::serde::encode_to_vec(Pairs(table), BINCODE)
            .map_err(|e| format!("cannot encode the sink's table: {e}"))?;
        Ok(SnapshotTable::Encoded(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    fn rows(self) -> Result<Vec<(Vec<Value>, i64)>, String> {
        match self {
            SnapshotTable::Rows(rows) => Ok(rows),
            SnapshotTable::Encoded(text) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("the sink's table is not base64: {e}"))?;
                bincode::serde::decode_from_slice(&bytes, BINCODE)
                    .map(|(rows, _)| rows)
                    .map_err(|e| format!("cannot decode the sink's table: {e}"))
            }
        }
    }
}

fn io_error(action: &str, path: &Path, e: std::io::Error) -> OperatorError {
    OperatorError::io(format!("cannot {action} `{}`", path.display()), e)
}

/// Publishes the files a completed checkpoint lists for one sink subtask. Idempotent: a file
/// already published is skipped, so a restore may run it again.
pub fn commit(state: &SubtaskState) -> Result<(), BuildError> {
    if state.state.is_null() {
        return Ok(());
    }
    let state = SinkState::deserialize(&state.state)
        .map_err(|e| BuildError::internal(format!("unreadable sink state: {e}")))?;
    if !state.pending.is_empty() {
        eddy_runtime::faults::check(eddy_runtime::faults::Site::Commit).map_err(|e| {
            BuildError::transient(format!("cannot publish the checkpoint's files: {e}"))
        })?;
    }
    let mut dirs = Vec::new();
    for staged in &state.pending {
        if staged.is_published() {
            continue;
        }
        if staged.committed.exists() {
            // Checkpoint ids are never reused, so this is another run's output.
            return Err(BuildError::new(format!(
                "refusing to replace `{}`, published by another run, with `{}`: give this job an output directory of its own",
                staged.committed.display(),
                staged.staging.display()
            )));
        }
        std::fs::rename(&staged.staging, &staged.committed).map_err(|e| {
            let message = format!(
                "cannot publish `{}` as `{}` ({e}); the staged file of a completed checkpoint must not be removed",
                staged.staging.display(),
                staged.committed.display()
            );
            // A staged file that is gone will not come back; anything else (permissions, a
            // full disk) may pass, and the commit is retried.
            if e.kind() == std::io::ErrorKind::NotFound {
                BuildError::internal(message)
            } else {
                BuildError::transient(message)
            }
        })?;
        if let Some(dir) = staged.committed.parent() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    // The renames are durable only once their directory is synced; a commit that cannot
    // make them so fails (and is retried: it is idempotent).
    for dir in dirs {
        eddy_runtime::checkpoint::storage::sync_dir(dir).map_err(|e| {
            BuildError::transient(format!(
                "cannot sync `{}` after publishing: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Part files of one sink subtask in a directory.
pub struct PartWriter {
    dir: PathBuf,
    /// The sink's name, file-name safe: sinks may share a directory.
    sink: String,
    subtask: u32,
    /// Publishing waits for checkpoints; otherwise the part is published at the end.
    exactly_once: bool,
    current: Option<(PathBuf, File)>,
    /// Parts sealed at earlier checkpoints and not yet seen published. Every snapshot lists
    /// them all: a checkpoint the coordinator abandoned (timed out) never commits, and the next
    /// one that completes must publish its parts too, or their rows would be lost.
    unpublished: Vec<Staged>,
    /// The last checkpoint this subtask took part in (or was restored from).
    last_checkpoint: CheckpointId,
    /// Distinguishes staging files of different runs and parts.
    run: String,
    parts: u64,
}

impl PartWriter {
    fn write(&mut self, bytes: &[u8]) -> OpResult {
        if self.current.is_none() {
            eddy_runtime::checkpoint::storage::create_dir_all_durable(&self.dir)
                .map_err(|e| io_error("create", &self.dir, e))?;
            self.parts += 1;
            let path = self.dir.join(format!(
                ".part-{}-{}-{}-{}.inprogress",
                self.subtask, self.sink, self.run, self.parts
            ));
            let file = File::create(&path).map_err(|e| io_error("create", &path, e))?;
            self.current = Some((path, file));
        }
        let (path, file) = self.current.as_mut().expect("opened above");
        eddy_runtime::faults::check(eddy_runtime::faults::Site::Output)
            .and_then(|()| file.write_all(bytes))
            .map_err(|e| io_error("write", path, e))
    }

    /// Closes the current staging file, if any, as the part covered by `checkpoint`.
    fn seal(&mut self, checkpoint: CheckpointId) -> OpResult<Option<Staged>> {
        let Some((staging, file)) = self.current.take() else {
            return Ok(None);
        };
        eddy_runtime::faults::before_sync();
        eddy_runtime::faults::check(eddy_runtime::faults::Site::Output)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("sync", &staging, e))?;
        // The staging file's directory entry too, so that a completed checkpoint never lists a
        // file a power cut took away.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", &self.dir, e))?;
        let committed = self.dir.join(format!(
            "part-{checkpoint:010}-{:03}-{}.jsonl",
            self.subtask, self.sink
        ));
        Ok(Some(Staged { staging, committed }))
    }
}

/// Where a sink subtask's lines go.
pub enum SinkOutput {
    /// One destination shared by all subtasks: a single file, standard output or nothing.
    Shared(std::sync::Arc<SinkFiles>),
    /// Part files in a directory.
    Parts(PartWriter),
}

impl SinkOutput {
    /// Part files of subtask `subtask` of sink `sink` in the directory of `connector`.
    pub fn parts(
        connector: &SinkConnector,
        sink: &str,
        subtask: u32,
        exactly_once: bool,
    ) -> SinkOutput {
        let dir = match connector {
            SinkConnector::File { path } => PathBuf::from(path),
            _ => PathBuf::from("."),
        };
        // Absolute, so that a restart from another working directory still finds the files a
        // checkpoint lists.
        let _ = std::fs::create_dir_all(&dir);
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let sink = crate::checkpointing::file_safe(sink);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SinkOutput::Parts(PartWriter {
            dir,
            sink,
            subtask,
            exactly_once,
            current: None,
            unpublished: Vec::new(),
            last_checkpoint: 0,
            run: format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff),
            parts: 0,
        })
    }
}

/// One subtask of a sink.
pub struct Sink {
    schema: SchemaRef,
    output: SinkOutput,
    blackhole: bool,
    buffer: Vec<u8>,
    /// For updating input: each row of the result with its multiplicity.
    table: Option<FxHashMap<Vec<Value>, i64>>,
}

impl Sink {
    /// A sink subtask owning `key_groups`, writing to `output`, continuing from checkpoint
    /// `restored_checkpoint` (0: none) and the `restored` states of all old subtasks (it keeps
    /// the rows of their materialised tables in its key groups; their files were committed
    /// before the job started).
    pub fn new(
        graph: &JobGraph,
        node: NodeId,
        key_groups: KeyGroupRange,
        mut output: SinkOutput,
        restored_checkpoint: CheckpointId,
        restored: &[&SubtaskState],
    ) -> Result<Sink, BuildError> {
        let blackhole = matches!(
            &graph.nodes[node].kind,
            eddy_runtime::graph::NodeKind::Sink(s) if matches!(s.connector, SinkConnector::Blackhole)
        );
        let mut table = graph.input_updating(node, 0).then(FxHashMap::default);
        for state in restored {
            if state.state.is_null() {
                continue;
            }
            let unreadable = |e: String| {
                BuildError::new(format!(
                    "sink `{}`: unreadable state in the checkpoint: {e}",
                    graph.nodes[node].name
                ))
            };
            let state =
                SinkState::deserialize(&state.state).map_err(|e| unreadable(e.to_string()))?;
            if let Some(table) = &mut table {
                // An updating input is hash-partitioned on the whole row: keep the rows whose
                // key group is now this subtask's.
                for (row, count) in state.table.rows().map_err(unreadable)? {
                    let kg = key_group_of(hash_key(&row), graph.max_parallelism);
                    if key_groups.contains(kg) {
                        *table.entry(row).or_insert(0) += count;
                    }
                }
            }
        }
        if let SinkOutput::Parts(parts) = &mut output {
            parts.last_checkpoint = restored_checkpoint;
        }
        Ok(Sink {
            schema: graph.input_schema(node, 0).clone(),
            output,
            blackhole,
            buffer: Vec::with_capacity(FLUSH_BYTES + 4096),
            table,
        })
    }

    fn flush(&mut self) -> OpResult {
        if !self.buffer.is_empty() {
            match &mut self.output {
                SinkOutput::Shared(files) => files.write(&self.buffer)?,
                SinkOutput::Parts(parts) => parts.write(&self.buffer)?,
            }
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
        match &mut self.output {
            SinkOutput::Shared(files) => files.finish(),
            SinkOutput::Parts(parts) if !parts.exactly_once => {
                // No checkpoints: the end of input is the only commit.
                let next = parts.last_checkpoint + 1;
                if let Some(staged) = parts.seal(next)? {
                    std::fs::rename(&staged.staging, &staged.committed)
                        .map_err(|e| io_error("publish", &staged.committed, e))?;
                }
                Ok(())
            }
            SinkOutput::Parts(_) => Ok(()),
        }
    }

    fn snapshot(&mut self, point: SnapshotPoint) -> OpResult<OperatorSnapshot> {
        self.flush()?;
        let SinkOutput::Parts(parts) = &mut self.output else {
            return Ok(OperatorSnapshot::default());
        };
        let checkpoint = match point {
            SnapshotPoint::Barrier(id) => id,
            // The final checkpoint gets a later id than any barrier this subtask saw.
            SnapshotPoint::EndOfInput => parts.last_checkpoint + 1,
        };
        let sealed = parts.seal(checkpoint)?;
        parts.unpublished.retain(|staged| !staged.is_published());
        parts.unpublished.extend(sealed);
        let pending = parts.unpublished.clone();
        parts.last_checkpoint = checkpoint;
        let table = match &self.table {
            Some(table) => SnapshotTable::encode(table).map_err(OperatorError::Message)?,
            None => SnapshotTable::default(),
        };
        let state = SinkState { pending, table };
        let state = serde_json::to_value(&state)
            .map_err(|e| OperatorError::Message(format!("cannot encode sink state: {e}")))?;
        Ok(OperatorSnapshot { state, keyed: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_table_reads_back_encoded_and_as_json_rows() {
        let mut table = FxHashMap::default();
        table.insert(vec![Value::Int(1), Value::str("a\"b")], 2);
        table.insert(vec![Value::Null, Value::Timestamp(5)], -1);
        let state = SinkState {
            pending: Vec::new(),
            table: SnapshotTable::encode(&table).unwrap(),
        };
        let json = serde_json::to_value(&state).unwrap();
        assert!(json["table"].is_string(), "{json}");
        let back = SinkState::deserialize(&json).unwrap().table.rows().unwrap();
        assert_eq!(back.into_iter().collect::<FxHashMap<_, _>>(), table);
        // A snapshot of an earlier version: the rows as JSON.
        let rows: Vec<(Vec<Value>, i64)> = table.clone().into_iter().collect();
        let json = serde_json::json!({ "pending": [], "table": rows });
        let back = SinkState::deserialize(&json).unwrap().table.rows().unwrap();
        assert_eq!(back.into_iter().collect::<FxHashMap<_, _>>(), table);
        let bad = serde_json::json!({ "pending": [], "table": "not base64!" });
        let err = SinkState::deserialize(&bad)
            .unwrap()
            .table
            .rows()
            .unwrap_err();
        assert!(err.contains("base64"), "{err}");
    }
}

//! Sources: JSON-lines files (Nexmark's nested events or declared columns) and the Nexmark
//! generator.
//!
//! **Splits.** Record i (a line over all input files, or a generated event) belongs to split
//! `i mod max_parallelism`, and a subtask reads the splits of its key-group range, each in the
//! input's order, so event time stays ordered per subtask and the split is the same on every
//! run. A checkpoint records, per range of splits, the index of the next record to read; a
//! restore at any parallelism gives each new subtask the positions of the splits it now owns.

use crate::compile::BuildError;
use crate::dead_letter::DeadLetters;
use crate::format::{event_to_row, generator_config, JsonColumn, JsonParser, NexmarkParser};
use crate::pushdown::required_columns;
use eddy_runtime::checkpoint::SubtaskState;
use eddy_runtime::graph::{
    FileFormat, GeneratorSpec, JobGraph, JsonColumnSpec, NodeId, NodeKind, SourceConnector,
    UnnestSpec,
};
use eddy_runtime::keygroup::KeyGroupRange;
use eddy_runtime::operator::{OpResult, OperatorError, Output, Source, SourcePoll};
use eddy_runtime::types::{Row, Timestamp, MIN_TIMESTAMP};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Lines per poll.
const BATCH: usize = 1024;

/// A poll also ends once the rows it emitted span this much event time (ms), so that the
/// executor sends a watermark at least this often in event time: 1024 rows of a sparse stream
/// (an hour of orders) would otherwise all go out behind one stale watermark, and whether a
/// late row among them counts as late would depend on where a poll happened to end.
pub(crate) const POLL_EVENT_TIME: i64 = 1_000;

/// Tracks the event time a poll has covered.
#[derive(Clone, Debug)]
pub(crate) struct PollClock {
    /// The time column of each output port, if the source has watermarks.
    columns: Vec<Option<usize>>,
    /// The largest time emitted before this poll.
    before: Timestamp,
    /// The largest time emitted so far.
    max: Timestamp,
}

impl PollClock {
    pub(crate) fn new(columns: Vec<Option<usize>>) -> PollClock {
        PollClock {
            columns,
            before: MIN_TIMESTAMP,
            max: MIN_TIMESTAMP,
        }
    }

    /// A poll starts.
    pub(crate) fn start(&mut self) {
        self.before = self.max;
    }

    /// A row goes out on `port`; true once the poll has covered enough event time.
    pub(crate) fn emitted(&mut self, port: usize, row: &Row) -> bool {
        let Some(Some(c)) = self.columns.get(port) else {
            return false;
        };
        let Some(t) = row.values[*c].as_timestamp() else {
            return false;
        };
        self.max = self.max.max(t);
        // The first row with a time ends the first poll: the first watermark goes out at once.
        self.before == MIN_TIMESTAMP || self.max - self.before >= POLL_EVENT_TIME
    }
}

/// Builds the source of one subtask.
pub fn build(
    graph: &JobGraph,
    id: NodeId,
    subtask: u32,
    dead_letters: &Arc<DeadLetters>,
    restored: Option<&[&SubtaskState]>,
) -> Result<Box<dyn Source>, BuildError> {
    let node = &graph.nodes[id];
    let NodeKind::Source(spec) = &node.kind else {
        return Err(BuildError::new(format!("`{}` is not a source", node.name)));
    };
    let range = KeyGroupRange::of_subtask(subtask, node.parallelism, graph.max_parallelism);
    // Files and the generator split records by index; Kafka splits by partition.
    let splits = || {
        Splits::new(range, graph.max_parallelism, restored.unwrap_or_default())
            .map_err(|e| BuildError::internal(format!("source `{}`: {e}", node.name)))
    };
    // Ports nobody reads are not parsed at all, and columns nobody reads are not decoded.
    let needed: Vec<Option<Vec<bool>>> = (0..node.outputs.len())
        .map(|port| {
            (!graph.consumers(id, port).is_empty()).then(|| {
                let mut columns = required_columns(graph, id, port);
                // The watermark reads its time column whether or not a consumer does.
                let schema = &node.outputs[port].schema;
                if let Some(i) = spec
                    .watermark
                    .as_ref()
                    .and_then(|w| schema.index_of(&w.column))
                {
                    columns[i] = true;
                }
                columns
            })
        })
        .collect();
    let nexmark_columns =
        || -> [Option<Vec<bool>>; 3] { std::array::from_fn(|t| needed.get(t).cloned().flatten()) };
    let json_parser = |columns: &[JsonColumnSpec], unnest: &Option<UnnestSpec>| {
        let parser = JsonParser::new(
            columns
                .iter()
                .map(|c| JsonColumn {
                    name: c.name.clone(),
                    data_type: c.data_type,
                    path: c.path.clone(),
                })
                .collect(),
            needed
                .first()
                .cloned()
                .flatten()
                .unwrap_or_else(|| vec![true; columns.len()]),
        );
        match unnest {
            Some(u) => parser
                .with_unnest(&u.path, u.ordinal.is_some())
                .map_err(|e| BuildError::new(format!("source `{}`: {e}", node.name))),
            None => Ok(parser),
        }
    };
    let time_columns: Vec<Option<usize>> = node
        .outputs
        .iter()
        .map(|port| {
            spec.watermark
                .as_ref()
                .and_then(|w| port.schema.index_of(&w.column))
        })
        .collect();
    match &spec.connector {
        SourceConnector::File { path, format } => {
            let parser = match format {
                FileFormat::Nexmark => LineParser::Nexmark(NexmarkParser::new(nexmark_columns())),
                FileFormat::Json { columns, unnest } => {
                    LineParser::Json(json_parser(columns, unnest)?)
                }
            };
            // An input that is not there is the job's mistake (a wrong path or parameter).
            let files = list_files(Path::new(path)).map_err(|e| match &e {
                OperatorError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    BuildError::new(e.to_string())
                }
                _ => BuildError::transient(e.to_string()),
            })?;
            Ok(Box::new(FileSource {
                name: node.name.clone(),
                files,
                current: None,
                parser,
                splits: splits()?,
                line_index: 0,
                dead_letters: Arc::clone(dead_letters),
                buffer: Vec::with_capacity(1024),
                rows: Vec::new(),
                clock: PollClock::new(time_columns),
            }))
        }
        SourceConnector::NexmarkGenerator(spec) => Ok(Box::new(GeneratorSource::new(
            spec,
            splits()?,
            nexmark_columns(),
        ))),
        SourceConnector::Kafka(kafka) => {
            let FileFormat::Json { columns, unnest } = &kafka.format else {
                return Err(BuildError::new(format!(
                    "source `{}`: Kafka records must be JSON with declared columns",
                    node.name
                )));
            };
            let parser = json_parser(columns, unnest)?;
            let time_column = spec
                .watermark
                .as_ref()
                .and_then(|w| node.outputs[0].schema.index_of(&w.column));
            let source = crate::source_kafka::KafkaSource::new(
                &node.name,
                kafka,
                parser,
                spec.watermark.as_ref(),
                time_column,
                range,
                graph.max_parallelism,
                restored.unwrap_or_default(),
                dead_letters,
            )
            .map_err(|e| e.context(format!("source `{}`", node.name)))?;
            Ok(Box::new(source))
        }
    }
}

/// The input files of a path: the file itself, or the regular, non-hidden files of a
/// directory in name order.
fn list_files(path: &Path) -> Result<Vec<PathBuf>, OperatorError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        OperatorError::io(
            format!(
                "cannot read input `{}` (check the path or the --param that sets it)",
                path.display()
            ),
            e,
        )
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| OperatorError::io(format!("cannot list `{}`", path.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| OperatorError::io(format!("cannot list `{}`", path.display()), e))?;
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with(['.', '_']);
        if !hidden && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Opens a file, decompressing `.gz`.
fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, OperatorError> {
    let file = File::open(path)
        .map_err(|e| OperatorError::io(format!("cannot open `{}`", path.display()), e))?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 16,
            file,
        )))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

/// How lines become rows.
enum LineParser {
    Nexmark(NexmarkParser),
    Json(JsonParser),
}

/// An open input file and the line number within it.
struct OpenFile {
    reader: Box<dyn BufRead + Send>,
    display: String,
    line: u64,
}

/// Reads JSON lines from files.
struct FileSource {
    name: String,
    files: Vec<PathBuf>,
    current: Option<OpenFile>,
    parser: LineParser,
    splits: Splits,
    /// Index of the next line over all files: decides which subtask owns it.
    line_index: u64,
    dead_letters: Arc<DeadLetters>,
    buffer: Vec<u8>,
    /// Rows of one JSON line (several with an unnested array).
    rows: Vec<Row>,
    clock: PollClock,
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
        let mut lines = 0;
        self.clock.start();
        let mut covered = false;
        while lines < BATCH && !covered {
            if self.current.is_none() {
                if self.files.is_empty() {
                    return Ok(SourcePoll::Finished);
                }
                let path = self.files.remove(0);
                self.current = Some(OpenFile {
                    reader: open(&path)?,
                    display: path.display().to_string(),
                    line: 0,
                });
            }
            let file = self.current.as_mut().expect("opened above");
            self.buffer.clear();
            let n = file
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(|e| OperatorError::io(format!("cannot read `{}`", file.display), e))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            file.line += 1;
            let mine = self.splits.owns(self.line_index);
            self.line_index += 1;
            if !mine {
                continue;
            }
            let line = trim_line(&self.buffer);
            if line.is_empty() {
                continue;
            }
            lines += 1;
            let parsed = match &mut self.parser {
                LineParser::Nexmark(p) => {
                    p.parse(line).map(|r| r.map(|(t, row)| (t as usize, row)))
                }
                LineParser::Json(p) => {
                    self.rows.clear();
                    p.parse_many(line, &mut self.rows).map(|()| None)
                }
            };
            match parsed {
                Ok(Some((port, row))) => {
                    covered |= self.clock.emitted(port, &row);
                    out.emit(port, row)
                }
                Ok(None) => {
                    for row in self.rows.drain(..) {
                        covered |= self.clock.emitted(0, &row);
                        out.emit(0, row);
                    }
                }
                Err(e) => self
                    .dead_letters
                    .record(&self.name, &file.display, file.line, &e.to_string(), line)
                    .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))?,
            }
        }
        Ok(SourcePoll::Ready)
    }

    fn input_position(&self) -> Option<u64> {
        // A restored subtask reads (and skips) the input up to its first owned record: pacing
        // counts from there, not from the start of the file.
        Some(self.line_index.max(self.splits.first_position()))
    }

    fn snapshot(&mut self) -> OpResult<serde_json::Value> {
        // What was refused before this checkpoint's position must survive a crash after it.
        self.dead_letters
            .sync()
            .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))?;
        Ok(self.splits.snapshot(self.line_index))
    }

    fn close(&mut self) -> OpResult {
        self.dead_letters
            .sync()
            .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// Which records a subtask reads: record i belongs to split `i mod max_parallelism`; the
/// subtask owns the splits of its range, each from a position on.
#[derive(Clone, Debug)]
struct Splits {
    range: KeyGroupRange,
    max_parallelism: u64,
    /// Per split: the index of the first record still to read, for owned splits.
    from: Vec<Option<u64>>,
}

/// A source's checkpointed position: runs of splits `[start, end)` and the index of the next
/// record to read in each.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Positions {
    splits: Vec<(u32, u32, u64)>,
}

impl Splits {
    fn new(
        range: KeyGroupRange,
        max_parallelism: u32,
        restored: &[&SubtaskState],
    ) -> Result<Splits, String> {
        let mut from = vec![None; max_parallelism as usize];
        for split in range.start..range.end {
            from[split as usize] = Some(0);
        }
        for state in restored {
            if state.state.is_null() {
                continue;
            }
            let positions = <Positions as serde::Deserialize>::deserialize(&state.state)
                .map_err(|e| format!("unreadable position in the checkpoint: {e}"))?;
            for (start, end, next) in positions.splits {
                for split in start.max(range.start)..end.min(range.end) {
                    from[split as usize] = Some(next);
                }
            }
        }
        Ok(Splits {
            range,
            max_parallelism: max_parallelism as u64,
            from,
        })
    }

    /// The lowest position this subtask resumes at in any of its splits (0 when it starts
    /// from the beginning).
    fn first_position(&self) -> u64 {
        (self.range.start..self.range.end)
            .filter_map(|split| self.from[split as usize])
            .min()
            .unwrap_or(0)
    }

    #[inline]
    fn owns(&self, record: u64) -> bool {
        self.from[(record % self.max_parallelism) as usize].is_some_and(|from| record >= from)
    }

    /// The first record at or after `record` that this subtask reads.
    fn next_owned(&self, mut record: u64) -> u64 {
        let m = self.max_parallelism;
        let (start, end) = (self.range.start as u64, self.range.end as u64);
        if start >= end {
            return u64::MAX;
        }
        loop {
            let split = record % m;
            if split < start {
                record += start - split;
            } else if split >= end {
                record += m - split + start;
            } else {
                match self.from[split as usize] {
                    // Not there yet in this split; the next record may be in another owned
                    // split whose position is lower, so step by one.
                    Some(from) if record < from => record += 1,
                    _ => return record,
                }
            }
        }
    }

    /// The position after reading every owned record below `next`.
    fn snapshot(&self, next: u64) -> serde_json::Value {
        let mut runs: Vec<(u32, u32, u64)> = Vec::new();
        for split in self.range.start..self.range.end {
            let pos = self.from[split as usize].unwrap_or(0).max(next);
            match runs.last_mut() {
                Some((_, end, p)) if *p == pos && *end == split => *end = split + 1,
                _ => runs.push((split, split + 1, pos)),
            }
        }
        serde_json::to_value(Positions { splits: runs }).unwrap_or_default()
    }
}

/// Generates Nexmark events with the `nexmark` crate.
struct GeneratorSource {
    /// Always `Some`; taken briefly to move it to another offset.
    generator: Option<nexmark::EventGenerator>,
    columns: [Option<Vec<bool>>; 3],
    splits: Splits,
    /// Index of the next event to consider, over all subtasks.
    next: u64,
    limit: Option<u64>,
    throttle: Option<(Instant, u64)>,
}

impl GeneratorSource {
    fn new(spec: &GeneratorSpec, splits: Splits, columns: [Option<Vec<bool>>; 3]) -> Self {
        let config = generator_config(spec.base_time as u64, spec.rate as usize);
        let next = splits.next_owned(0);
        GeneratorSource {
            generator: Some(nexmark::EventGenerator::new(config).with_offset(next)),
            columns,
            splits,
            next,
            limit: spec.events,
            throttle: spec.throttle.then(|| (Instant::now(), spec.rate)),
        }
    }
}

impl Source for GeneratorSource {
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
        for _ in 0..BATCH {
            let event_index = self.splits.next_owned(self.next);
            if self.limit.is_some_and(|l| event_index >= l) || event_index == u64::MAX {
                self.next = event_index.min(self.limit.unwrap_or(u64::MAX));
                return Ok(if out.is_empty() {
                    SourcePoll::Finished
                } else {
                    SourcePoll::Ready
                });
            }
            if let Some((start, rate)) = self.throttle {
                let due = event_index as f64 / rate.max(1) as f64;
                if start.elapsed().as_secs_f64() < due {
                    return Ok(if out.is_empty() {
                        SourcePoll::Idle
                    } else {
                        SourcePoll::Ready
                    });
                }
            }
            let mut generator = self.generator.take().expect("always present");
            if generator.offset() != event_index {
                generator = generator.with_offset(event_index);
            }
            let event = generator.next();
            self.generator = Some(generator);
            let Some(event) = event else {
                return Ok(SourcePoll::Finished);
            };
            self.next = event_index + 1;
            if let Some((table, row)) = event_to_row(event, &self.columns) {
                out.emit(table as usize, row);
            }
        }
        Ok(SourcePoll::Ready)
    }

    fn input_position(&self) -> Option<u64> {
        Some(self.next)
    }

    fn snapshot(&mut self) -> OpResult<serde_json::Value> {
        Ok(self.splits.snapshot(self.next))
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn every_record_is_read_once_at_any_parallelism_and_after_a_rescale() {
        let owners = |p: u32, restored: &[Vec<serde_json::Value>]| -> Vec<Splits> {
            (0..p)
                .map(|s| {
                    let range = KeyGroupRange::of_subtask(s, p, 128);
                    let states: Vec<SubtaskState> = restored
                        .iter()
                        .flatten()
                        .map(|v| SubtaskState {
                            subtask: 0,
                            key_groups: range,
                            finished: false,
                            state: v.clone(),
                            keyed: None,
                            watermark: None,
                        })
                        .collect();
                    let refs: Vec<&SubtaskState> = states.iter().collect();
                    Splits::new(range, 128, &refs).unwrap()
                })
                .collect()
        };
        for p in [1, 2, 3, 7] {
            let splits = owners(p, &[]);
            for record in 0..1000u64 {
                let n = splits.iter().filter(|s| s.owns(record)).count();
                assert_eq!(n, 1, "record {record} at p={p}");
            }
        }
        // p=2 read up to 300 (subtask 0) and 500 (subtask 1); then restore at p=3.
        let before = owners(2, &[]);
        let states = vec![vec![before[0].snapshot(300), before[1].snapshot(500)]];
        let after = owners(3, &states);
        for record in 0..1000u64 {
            let split = record % 128;
            let done = if split < 64 {
                record < 300
            } else {
                record < 500
            };
            let n = after.iter().filter(|s| s.owns(record)).count();
            assert_eq!(n, usize::from(!done), "record {record}");
            for s in &after {
                if s.owns(record) {
                    assert_eq!(s.next_owned(record), record);
                }
            }
        }
        assert_eq!(after[0].next_owned(0), 384, "300 is in split 44, not owned");
        // next_owned visits exactly the owned records, in order.
        for s in &after {
            let mut visited = Vec::new();
            let mut r = s.next_owned(0);
            while r < 1000 {
                visited.push(r);
                r = s.next_owned(r + 1);
            }
            let owned: Vec<u64> = (0..1000).filter(|&r| s.owns(r)).collect();
            assert_eq!(visited, owned);
        }
    }
}

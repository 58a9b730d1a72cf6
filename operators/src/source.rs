//! Sources: JSON-lines files (Nexmark's nested events or declared columns) and the Nexmark
//! generator.
//!
//! With parallelism P, file subtask i keeps the lines whose index mod P is i, and generator
//! subtask i makes events i, i+P, ...: every subtask sees its share in the input's order, so
//! event time stays ordered per subtask and the split is the same on every run (replayable from
//! a line or event index, which the checkpoints of the next step will record).

use crate::dead_letter::DeadLetters;
use crate::format::{event_to_row, generator_config, JsonColumn, JsonParser, NexmarkParser};
use crate::pushdown::required_columns;
use eddy_runtime::graph::{FileFormat, GeneratorSpec, JobGraph, NodeId, NodeKind, SourceConnector};
use eddy_runtime::operator::{OpResult, OperatorError, Output, Source, SourcePoll};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Lines per poll.
const BATCH: usize = 1024;

/// Builds the source of one subtask.
pub fn build(
    graph: &JobGraph,
    id: NodeId,
    subtask: u32,
    dead_letters: &Arc<DeadLetters>,
) -> Result<Box<dyn Source>, String> {
    let node = &graph.nodes[id];
    let NodeKind::Source(spec) = &node.kind else {
        return Err(format!("`{}` is not a source", node.name));
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
    match &spec.connector {
        SourceConnector::File { path, format } => {
            let parser = match format {
                FileFormat::Nexmark => LineParser::Nexmark(NexmarkParser::new(nexmark_columns())),
                FileFormat::Json { columns } => LineParser::Json(JsonParser::new(
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
                )),
            };
            let files = list_files(Path::new(path)).map_err(|e| e.to_string())?;
            Ok(Box::new(FileSource {
                name: node.name.clone(),
                files,
                current: None,
                parser,
                subtask: subtask as u64,
                parallelism: node.parallelism as u64,
                line_index: 0,
                dead_letters: Arc::clone(dead_letters),
                buffer: Vec::with_capacity(1024),
            }))
        }
        SourceConnector::NexmarkGenerator(spec) => Ok(Box::new(GeneratorSource::new(
            spec,
            subtask,
            node.parallelism,
            nexmark_columns(),
        ))),
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
    subtask: u64,
    parallelism: u64,
    /// Index of the next line over all files: decides which subtask owns it.
    line_index: u64,
    dead_letters: Arc<DeadLetters>,
    buffer: Vec<u8>,
}

impl Source for FileSource {
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
        let mut lines = 0;
        while lines < BATCH {
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
            let mine = self.line_index % self.parallelism == self.subtask;
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
                LineParser::Json(p) => p.parse(line).map(|row| Some((0, row))),
            };
            match parsed {
                Ok(Some((port, row))) => out.emit(port, row),
                Ok(None) => {}
                Err(e) => self
                    .dead_letters
                    .record(&self.name, &file.display, file.line, &e.to_string(), line)
                    .map_err(|e| OperatorError::io("cannot write the dead-letter file", e))?,
            }
        }
        Ok(SourcePoll::Ready)
    }

    fn close(&mut self) -> OpResult {
        self.dead_letters
            .flush()
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

/// Generates Nexmark events with the `nexmark` crate.
struct GeneratorSource {
    generator: nexmark::EventGenerator,
    columns: [Option<Vec<bool>>; 3],
    /// Index of the next event over all subtasks.
    next: u64,
    step: u64,
    limit: Option<u64>,
    throttle: Option<(Instant, u64)>,
}

impl GeneratorSource {
    fn new(
        spec: &GeneratorSpec,
        subtask: u32,
        parallelism: u32,
        columns: [Option<Vec<bool>>; 3],
    ) -> GeneratorSource {
        let config = generator_config(spec.base_time as u64, spec.rate as usize);
        let generator = nexmark::EventGenerator::new(config)
            .with_offset(subtask as u64)
            .with_step(parallelism as u64);
        GeneratorSource {
            generator,
            columns,
            next: subtask as u64,
            step: parallelism as u64,
            limit: spec.events,
            throttle: spec.throttle.then(|| (Instant::now(), spec.rate)),
        }
    }
}

impl Source for GeneratorSource {
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll> {
        for _ in 0..BATCH {
            if self.limit.is_some_and(|l| self.next >= l) {
                return Ok(if out.is_empty() {
                    SourcePoll::Finished
                } else {
                    SourcePoll::Ready
                });
            }
            if let Some((start, rate)) = self.throttle {
                let due = self.next as f64 / rate.max(1) as f64;
                if start.elapsed().as_secs_f64() < due {
                    return Ok(if out.is_empty() {
                        SourcePoll::Idle
                    } else {
                        SourcePoll::Ready
                    });
                }
            }
            let Some(event) = self.generator.next() else {
                return Ok(SourcePoll::Finished);
            };
            self.next += self.step;
            if let Some((table, row)) = event_to_row(event, &self.columns) {
                out.emit(table as usize, row);
            }
        }
        Ok(SourcePoll::Ready)
    }
}

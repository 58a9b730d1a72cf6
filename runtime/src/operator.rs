//! The contracts between the executor and the code of operators, sources and sinks.
//!
//! An operator is synchronous, `&mut self` logic (like timely-dataflow's operator closures): the
//! executor calls it with a batch, a watermark or the end of input, and the operator pushes
//! results into an [`Output`]. It never sees channels, threads or partitioning, so the same
//! operator runs in a local thread today and in a cluster actor later.

use crate::checkpoint::{OperatorSnapshot, SnapshotPoint};
use crate::types::{Row, Timestamp};

/// Why an operator, source or sink failed. The message names the operator and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// An I/O error (a full disk, a failing device): transient.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Something that should not happen: internal.
    #[error("{0}")]
    Message(String),
    /// A mistake in the job or its configuration, which a restart would repeat.
    #[error("{0}")]
    User(String),
    /// A dependency failed (a database or broker down): retried.
    #[error("{0}")]
    Transient(String),
}

impl OperatorError {
    /// Whose fault it is.
    pub fn domain(&self) -> crate::error::FaultDomain {
        use crate::error::FaultDomain;
        match self {
            OperatorError::Io { .. } | OperatorError::Transient(_) => FaultDomain::Transient,
            OperatorError::Message(_) => FaultDomain::Internal,
            OperatorError::User(_) => FaultDomain::User,
        }
    }

    /// An I/O error with the path or action that failed.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> OperatorError {
        OperatorError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of operator code.
pub type OpResult<T = ()> = Result<T, OperatorError>;

/// Where an operator puts its results: one buffer per output port. The executor routes each
/// port's rows to the chained operators or exchanges connected to it.
#[derive(Debug, Default)]
pub struct Output {
    ports: Vec<Vec<Row>>,
}

impl Output {
    /// An output with `ports` ports.
    pub fn new(ports: usize) -> Output {
        Output {
            ports: (0..ports.max(1)).map(|_| Vec::new()).collect(),
        }
    }

    /// Emits one row on a port.
    #[inline]
    pub fn emit(&mut self, port: usize, row: Row) {
        self.ports[port].push(row);
    }

    /// Emits a whole batch on a port, without copying when the port buffer is empty.
    pub fn emit_batch(&mut self, port: usize, mut rows: Vec<Row>) {
        let buffer = &mut self.ports[port];
        if buffer.is_empty() {
            std::mem::swap(buffer, &mut rows);
        } else {
            buffer.append(&mut rows);
        }
    }

    /// Number of ports.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// The rows buffered on a port, for inspection (e.g. watermark generation).
    pub fn rows(&self, port: usize) -> &[Row] {
        &self.ports[port]
    }

    /// Takes the rows of a port, leaving it empty.
    pub fn take(&mut self, port: usize) -> Vec<Row> {
        std::mem::take(&mut self.ports[port])
    }

    /// Total rows buffered over all ports.
    pub fn len(&self) -> usize {
        self.ports.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.iter().all(Vec::is_empty)
    }
}

/// A transformation of one or more input streams. Only `process` is required.
pub trait Operator: Send {
    /// Handles a batch of rows that arrived on input `input`.
    fn process(&mut self, input: usize, rows: Vec<Row>, out: &mut Output) -> OpResult;

    /// Event time has reached `watermark` on every input: fire what is due (windows, timers).
    /// The executor forwards the watermark downstream after this returns.
    fn on_watermark(&mut self, _watermark: Timestamp, _out: &mut Output) -> OpResult {
        Ok(())
    }

    /// Every input has ended (after a final watermark of +infinity): flush and close. Sinks
    /// finish their files here.
    fn on_end(&mut self, _out: &mut Output) -> OpResult {
        Ok(())
    }

    /// A barrier passed this operator (or its input ended): everything it processed so far
    /// belongs to the snapshot. Do the synchronous part (and nothing more: the stream waits) and
    /// return the rest as a pending upload. Stateless operators keep the default.
    fn snapshot(&mut self, _point: SnapshotPoint) -> OpResult<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }
}

/// What a source did in one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// It emitted records (or may have more right away).
    Ready,
    /// It has nothing right now; poll again later. Its watermark must not stall others.
    Idle,
    /// Its input is exhausted.
    Finished,
}

/// The start of a stream: reads or generates records, a batch per poll.
pub trait Source: Send {
    /// Emits up to about one batch of rows into `out`, one port per output of the source.
    fn poll(&mut self, out: &mut Output) -> OpResult<SourcePoll>;

    /// The position to resume from after everything emitted so far, for a checkpoint. A
    /// source that cannot replay returns an error, which fails the checkpoint.
    fn snapshot(&mut self) -> OpResult<serde_json::Value> {
        Err(OperatorError::Message(
            "this source cannot be replayed, so its job cannot checkpoint".into(),
        ))
    }

    /// How far into the whole input this subtask has read: records of every split, its own and
    /// other subtasks', kept or dropped. A paced source (`--max-rate`) advances by this, so a
    /// source that drops most records (q8 keeps 8% of Nexmark's events) still takes the input's
    /// time. `None`: pace by the rows emitted.
    fn input_position(&self) -> Option<u64> {
        None
    }

    /// Whether the source tracks event time itself (per Kafka partition, restored from its
    /// checkpoint). Then the executor sends [`Source::watermark`] instead of "largest time
    /// emitted minus the delay".
    fn tracks_watermark(&self) -> bool {
        false
    }

    /// The watermark of a source that tracks event time itself, also before the first poll;
    /// `None` while it has none yet (a partition has not said where it is).
    fn watermark(&self) -> Option<Timestamp> {
        None
    }

    /// Called once when the source has finished or the job stops: release files, report counts.
    fn close(&mut self) -> OpResult {
        Ok(())
    }
}

//! What flows on a channel between tasks.

use crate::types::{Row, Timestamp};

/// One message on a channel. Records travel in batches so that per-message costs (channel
/// synchronisation, dispatch) are paid once per batch, not once per record.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    /// Records, in order.
    Batch(Vec<Row>),
    /// No record with an event time at or below this will follow on this channel.
    Watermark(Timestamp),
    /// The sender has no data for now; its watermark must not hold back the receiver's until it
    /// sends again (Flink's idle watermark status).
    Idle,
    /// Checkpoint barrier: everything before it on this channel belongs to checkpoint `id`,
    /// everything after to the next (Flink's asynchronous barrier snapshots).
    Barrier(crate::checkpoint::CheckpointId),
    /// The sender is done: bounded input reached its end. Counts as a watermark of +infinity.
    End,
}

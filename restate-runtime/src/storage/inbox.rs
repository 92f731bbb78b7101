//! Messages between processes on one database: what a process that does not run an
//! invocation's partition hands to the process that does (a new invocation from its ingress,
//! an awakeable's completion, an operator's cancel or kill), written durably into that
//! partition's inbox before the sender answers; and the signals that wake the receivers.
//!
//! A store of one process (redb, in-memory) always runs every partition and never forwards.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::records::{InvocationRecord, Outcome};
use crate::ids::InvocationId;

/// What a process forwards to the owner of an invocation's partition.
///
/// ```
/// use restate_runtime::storage::InboxMessage;
/// let kill = InboxMessage::Kill;
/// assert!(!kill.starts_invocation());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxMessage {
    /// A new invocation, its record built by the process that accepted it (the id it told
    /// its caller is the row's).
    Invoke(Box<InvocationRecord>),
    /// An awakeable of the invocation completed from outside.
    CompleteAwakeable {
        /// The awakeable's id, as handed out.
        awakeable: String,
        /// Its value or failure.
        outcome: Outcome,
    },
    /// Cancel the invocation (a terminal error at its next await point).
    Cancel,
    /// Stop the invocation at once.
    Kill,
    /// Forget a completed invocation.
    Purge,
    /// Run a paused invocation again.
    Resume,
}

impl InboxMessage {
    /// Whether it creates its invocation: such a message is unique per invocation id across
    /// the deployment (an idempotency key's duplicate finds the first).
    pub fn starts_invocation(&self) -> bool {
        matches!(self, Self::Invoke(_))
    }
}

/// One message in an inbox, as its owner reads it.
///
/// ```
/// use restate_runtime::storage::{InboxMessage, Inbound};
/// # fn demo(id: restate_runtime::InvocationId) {
/// let inbound = Inbound { seq: 7, id, message: InboxMessage::Cancel };
/// assert_eq!(inbound.seq, 7);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Its place in arrival order, which [`WriteOp::InboxDone`](super::WriteOp::InboxDone)
    /// removes.
    pub seq: u64,
    /// The invocation it is for.
    pub id: InvocationId,
    /// What to do.
    pub message: InboxMessage,
}

/// What the inboxes hold for an invocation ([`Storage::inbox_pending`](super::Storage::inbox_pending)).
///
/// ```
/// let none = restate_runtime::storage::InboxPending::default();
/// assert!(!none.starts && !none.partition);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxPending {
    /// A message that starts the invocation, not applied yet.
    pub starts: bool,
    /// Some message for the invocation's partition key (an object's or workflow's key, or
    /// the invocation itself), not applied yet: later work for that key waits behind it.
    pub partition: bool,
}

/// How forwarding a message went.
///
/// ```
/// use restate_runtime::storage::Forwarded;
/// assert_ne!(Forwarded::New, Forwarded::Duplicate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Written: the owner will apply it.
    New,
    /// An [`InboxMessage::Invoke`] for an invocation that exists already (stored, or in an
    /// inbox): nothing written.
    Duplicate,
}

/// Counters that other processes' commits bump (a multi-process store's notifications):
/// waiters subscribe, then read the store, then wait for a change, so no wake-up is missed.
///
/// ```
/// use restate_runtime::storage::Signals;
/// let (signals, _inbox, _finished) = Signals::channels();
/// assert_eq!(*signals.inbox.borrow(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Signals {
    /// Bumped when a message may have arrived in an inbox.
    pub inbox: watch::Receiver<u64>,
    /// Bumped when an invocation may have finished.
    pub finished: watch::Receiver<u64>,
}

impl Signals {
    /// Signals and the two senders that bump them.
    pub fn channels() -> (Self, watch::Sender<u64>, watch::Sender<u64>) {
        let (inbox_tx, inbox) = watch::channel(0);
        let (finished_tx, finished) = watch::channel(0);
        (Self { inbox, finished }, inbox_tx, finished_tx)
    }
}

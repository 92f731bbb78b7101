//! Messages between processes on one database: what a process that does not run an
//! invocation's partition hands to the process that does (a new invocation from its ingress,
//! an awakeable's completion, an operator's cancel or kill), written durably into that
//! partition's inbox before the sender answers; and the signals that wake the receivers.
//!
//! A store of one process (redb, in-memory) always runs every partition and never forwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::records::{InvocationRecord, JournalEntry, Outcome};
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
    /// Entry `index` of `waiter`, an invocation of another partition, waits on this one's
    /// result (an attach): the owner completes it when this one ends, or at once if it has
    /// (with a 404 if it is unknown).
    Attach {
        /// The waiting invocation.
        waiter: InvocationId,
        /// Its `Attach` entry.
        index: u32,
    },
    /// Entry `index` of the invocation, completed by an invocation of another partition (the
    /// result of a call it made): the owner records it as if it had completed it itself, and
    /// the first completion of an entry wins.
    Complete {
        /// The entry's position in the journal.
        index: u32,
        /// The entry, completed.
        entry: JournalEntry,
    },
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
    /// A message for the invocation, not applied yet: one that starts it, or one that a
    /// handler of another partition sent it (which may create it). Until it is applied the
    /// invocation may not be stored yet.
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

/// Whether this process accepted a new invocation first across the deployment
/// ([`Storage::first_acceptance`](crate::storage::Storage::first_acceptance)): decided by the
/// commit that first stores its record, against the messages that start it in an inbox (the
/// same request accepted by another process, which forwarded it). Undecided until then, or
/// for good when that commit failed.
///
/// ```
/// use restate_runtime::storage::Acceptance;
/// let acceptance = Acceptance::default();
/// assert!(!acceptance.first() && !acceptance.second());
/// acceptance.settle(false);
/// assert!(acceptance.second());
/// ```
#[derive(Debug, Default)]
pub struct Acceptance {
    /// 0: undecided, 1: first, 2: second.
    verdict: std::sync::atomic::AtomicU8,
}

impl Acceptance {
    /// Records the commit's verdict: `first` when no inbox held a message that starts it.
    pub fn settle(&self, first: bool) {
        let verdict = if first { 1 } else { 2 };
        self.verdict
            .store(verdict, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the commit found no other process had accepted it.
    pub fn first(&self) -> bool {
        self.verdict.load(std::sync::atomic::Ordering::SeqCst) == 1
    }

    /// Whether another process accepted it first (its answer is a duplicate's).
    pub fn second(&self) -> bool {
        self.verdict.load(std::sync::atomic::Ordering::SeqCst) == 2
    }
}

/// What other processes' commits signal (a multi-process store's notifications): waiters
/// subscribe, then read the store, then wait for a change, so no wake-up is missed.
///
/// ```
/// use restate_runtime::storage::Signals;
/// let (signals, _inbox) = Signals::channels();
/// assert_eq!(*signals.inbox.borrow(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Signals {
    /// Bumped when a message may have arrived in an inbox.
    pub inbox: watch::Receiver<u64>,
    /// Which invocations finished.
    pub finished: Finished,
}

impl Signals {
    /// Signals, and the sender that bumps `inbox`.
    pub fn channels() -> (Self, watch::Sender<u64>) {
        let (inbox_tx, inbox) = watch::channel(0);
        let finished = Finished::default();
        (Self { inbox, finished }, inbox_tx)
    }
}

/// Invocations finished by another process, told to the waiters of each (a wake-up per
/// waiter of that invocation, not of every waiter), or to all at once when the notification
/// did not name them (a lost connection, a long list).
///
/// ```
/// # fn demo(id: restate_runtime::InvocationId) {
/// use restate_runtime::storage::Finished;
/// let finished = Finished::default();
/// let mut waiting = finished.watch(id);
/// finished.finished([id]);
/// assert!(waiting.has_changed());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Finished(Arc<Mutex<FinishedWaiters>>);

#[derive(Debug)]
struct FinishedWaiters {
    all: watch::Sender<u64>,
    by_id: HashMap<InvocationId, watch::Sender<u64>>,
}

impl Default for FinishedWaiters {
    fn default() -> Self {
        Self {
            all: watch::channel(0).0,
            by_id: HashMap::new(),
        }
    }
}

fn bump(counter: &watch::Sender<u64>) {
    counter.send_modify(|n| *n = n.wrapping_add(1));
}

impl Finished {
    /// Watches for `id`'s end (or for everything: see [`Finished::all`]).
    pub fn watch(&self, id: InvocationId) -> FinishedWatch {
        let mut waiters = self.0.lock().expect("finished waiters");
        // Entries nobody watches any more go now and then, not one by one.
        if waiters.by_id.len() >= 1024 && waiters.by_id.len().is_power_of_two() {
            waiters.by_id.retain(|_, tx| tx.receiver_count() > 0);
        }
        let one = waiters
            .by_id
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        FinishedWatch {
            one,
            all: waiters.all.subscribe(),
        }
    }

    /// These invocations finished.
    pub fn finished(&self, ids: impl IntoIterator<Item = InvocationId>) {
        let mut waiters = self.0.lock().expect("finished waiters");
        for id in ids {
            if let Some(tx) = waiters.by_id.get(&id) {
                bump(tx);
                if tx.receiver_count() == 0 {
                    waiters.by_id.remove(&id);
                }
            }
        }
    }

    /// Some invocations finished, which is not known: every waiter looks.
    pub fn all(&self) {
        bump(&self.0.lock().expect("finished waiters").all);
    }
}

/// One waiter's view of [`Finished`].
#[derive(Debug)]
pub struct FinishedWatch {
    one: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
}

impl FinishedWatch {
    /// Whether a change came since the last [`FinishedWatch::seen`] or [`FinishedWatch::changed`].
    pub fn has_changed(&self) -> bool {
        self.one.has_changed().unwrap_or(true) || self.all.has_changed().unwrap_or(true)
    }

    /// Marks what came so far as seen (before reading the store).
    pub fn seen(&mut self) {
        self.one.borrow_and_update();
        self.all.borrow_and_update();
    }

    /// Waits for the next change.
    pub async fn changed(&mut self) {
        tokio::select! {
            _ = self.one.changed() => {}
            _ = self.all.changed() => {}
        }
    }
}

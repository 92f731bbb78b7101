//! Storage: the narrow interface the engine writes and reads through, its redb backend, an
//! in-memory one (the test runtime's) and a PostgreSQL one (feature `postgres`), all held to
//! one conformance suite.
//!
//! Writes are batches of operations submitted to one writer, which commits many batches in one
//! durable commit (group commit) in submission order, and answers each batch after the commit.
//! Reads go straight to the store. Another backend (say, Postgres with partitions leased per
//! process) implements [`Storage`] without touching the engine.

mod backup;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod crash_tests;
mod derived_ids;
#[cfg(test)]
mod faults;
mod fence;
mod files;
mod inbox;
mod kept_aside;
mod kills;
mod log;
mod memory;
mod partitions;
mod peers;
pub(crate) mod placement;
#[cfg(feature = "postgres")]
mod postgres;
mod read_only;
pub(crate) mod records;
mod redb_store;
mod space;
mod wal;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

pub use backup::{BackupError, BackupReport};
pub(crate) use fence::Fence;
pub use inbox::{
    Acceptance, Finished, FinishedWatch, Forwarded, Inbound, InboxMessage, InboxPending, Signals,
};
#[cfg(test)]
pub(crate) use memory::MemoryStorage;
pub(crate) use memory::MemoryStore;
pub use partitions::Partitions;
pub use peers::{Peer, Peers};
pub use placement::Placement;
#[cfg(feature = "postgres")]
pub(crate) use postgres::KillSwitch;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStorage};
pub(crate) use read_only::ReadOnly;
pub use records::{
    HintHead, Interrupted, InvocationRecord, JournalEntry, Outcome, Retry, Status, Target,
    UnfinishedHint,
};
pub(crate) use redb_store::{
    DEFAULT_MAX_GROUP_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MIN_FREE_BYTES, holds_store,
};
pub use redb_store::{RedbOptions, RedbStorage};

use crate::ids::InvocationId;

/// Errors opening a data folder (or a database); each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data folder.
    #[error(
        "{} {path} is in use by another process (only one runtime may open it)",
        noun(path)
    )]
    Locked {
        /// The data folder.
        path: String,
    },
    /// The folder or file cannot be created or read.
    #[error("cannot open {} {path}: {source}", noun(path))]
    Io {
        /// The data folder.
        path: String,
        /// What the OS reported.
        source: std::io::Error,
    },
    /// Written by another format version or partition layout.
    #[error("{} {path} is incompatible with this build: {reason}", noun(path))]
    Incompatible {
        /// The data folder.
        path: String,
        /// Which version or layout differs.
        reason: String,
    },
    /// The file is not a valid store.
    #[error("{} {path} is corrupt: {reason}", noun(path))]
    Corrupt {
        /// The data folder.
        path: String,
        /// What redb found wrong.
        reason: String,
    },
}

/// What an [`OpenError`]'s `path` names: a database URL (the password left out) or a folder.
fn noun(path: &str) -> &'static str {
    if path.contains("://") || path.starts_with("RESTATE_DATABASE_URL") {
        "database"
    } else {
        "data folder"
    }
}

/// Errors reading or writing a store that is open.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend failed (I/O, corruption); the message says how.
    #[error("storage failure: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("undecodable stored value: {0}")]
    Decode(String),
    /// An earlier commit failed: nothing after it may be acknowledged, so the writer refuses all.
    #[error("storage writer stopped after a failed commit: {0}")]
    Poisoned(String),
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
}

impl From<records::DecodeRecordError> for StorageError {
    fn from(e: records::DecodeRecordError) -> Self {
        Self::Decode(e.to_string())
    }
}

/// What [`Storage::invocation_async`] answers.
pub type RecordWaiter =
    Pin<Box<dyn Future<Output = Result<Option<InvocationRecord>, StorageError>> + Send + 'static>>;

/// What [`Storage::inbox_pending_async`] answers.
pub type InboxPendingWaiter =
    Pin<Box<dyn Future<Output = Result<InboxPending, StorageError>> + Send + 'static>>;

/// What [`Storage::state_async`] answers.
pub type StateWaiter =
    Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, StorageError>> + Send + 'static>>;

/// What [`Storage::forward`] answers once the message is durable (or refused).
pub type ForwardWaiter =
    Pin<Box<dyn Future<Output = Result<Forwarded, StorageError>> + Send + 'static>>;

/// One write, already encoded by the submitter so the writer thread only copies bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum WriteOp {
    /// Insert or replace an invocation record.
    PutInvocation {
        /// The invocation.
        id: InvocationId,
        /// The [`InvocationRecord`], encoded.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
        /// When finished: the expiry time that the purger indexes it under.
        expires_at_ms: Option<u64>,
        /// When not finished: the recovery hint indexed for it.
        #[serde(with = "serde_bytes")]
        unfinished: Option<Vec<u8>>,
        /// Whether an earlier write may have indexed a recovery hint, which a finished record
        /// removes (false for a record stored for the first time, so the index is not touched).
        stored_before: bool,
    },
    /// Append (or overwrite) a journal entry.
    PutJournal {
        /// The invocation whose journal it is.
        id: InvocationId,
        /// The entry's position in that journal.
        index: u32,
        /// The [`JournalEntry`], encoded.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
    /// Remove an invocation with its journal and expiry index entry.
    DeleteInvocation {
        /// The invocation.
        id: InvocationId,
    },
    /// Set one state entry of an object or workflow key.
    SetState {
        /// The key whose state it is.
        scope: StateScope,
        /// The entry's name.
        name: String,
        /// The value's JSON bytes, as the handler serialized them.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove one state entry.
    ClearState {
        /// The key whose state it is.
        scope: StateScope,
        /// The entry's name.
        name: String,
    },
    /// Remove every state entry of a key.
    ClearAllState {
        /// The key whose state it is.
        scope: StateScope,
    },
    /// Complete a workflow's durable promise.
    PutPromise {
        /// The workflow key the promise belongs to.
        scope: StateScope,
        /// The promise's name.
        name: String,
        /// Its [`Outcome`], encoded.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
    /// Remove every durable promise of a workflow key.
    ClearPromises {
        /// The workflow key.
        scope: StateScope,
    },
    /// Record that entry `index` of invocation `id` waits on a promise, so a completion after
    /// a restart still finds it.
    AddPromiseWaiter {
        /// The workflow key.
        scope: StateScope,
        /// The promise.
        name: String,
        /// The waiting invocation.
        id: InvocationId,
        /// Its `GetPromise` entry.
        index: u32,
    },
    /// Forget the waiters of a completed promise.
    ClearPromiseWaiters {
        /// The workflow key.
        scope: StateScope,
        /// The promise.
        name: String,
    },
    /// Entry `index` of invocation `id` was completed from outside (or, at
    /// [`CANCEL_WAKE`], a cancellation was requested): recovery resumes the invocation if its
    /// record says suspended. Written in the same batch as the completion (law 9).
    Wake {
        /// The invocation to wake.
        id: InvocationId,
        /// The completed entry.
        index: u32,
    },
    /// A suspension saw these completions: their wake-ups are spent. Committed with the
    /// suspended record; completions it did not see keep theirs.
    ClearWakes {
        /// The suspended invocation.
        id: InvocationId,
        /// The entries whose completion it saw.
        indexes: Vec<u32>,
    },
    /// Entry `index` of `waiter` waits on `source`'s result (an attach or a duplicate call):
    /// `source`'s completion completes it, also after a restart.
    AddResultWaiter {
        /// The awaited invocation.
        source: InvocationId,
        /// The waiting invocation.
        waiter: InvocationId,
        /// Its waiting entry.
        index: u32,
        /// The entry is a `Call` (else an `Attach`).
        call: bool,
    },
    /// Forget the result waiters of `source` (its completion has completed them).
    ClearResultWaiters {
        /// The invocation that completed.
        source: InvocationId,
    },
    /// Mark an unfinished invocation's stored record as cancellation requested (read, changed
    /// and written by the writer; a completed one, or none, is left as it is).
    RequestCancel {
        /// The invocation to cancel.
        id: InvocationId,
    },
    /// Remove applied inbox messages ([`Inbound::seq`]); committed after what they caused, by
    /// the owner's writer, so a process that lost the store cannot remove them. A store of
    /// one process has no inbox: nothing to do.
    InboxDone {
        /// The messages.
        seqs: Vec<u64>,
    },
    /// A message into the inbox of `id`'s partition, written with the batch whose entry
    /// caused it: an effect on a partition another process runs (a transactional outbox,
    /// law 3 across processes). Only a shared store gets one: a store of one process runs
    /// every partition.
    Forward {
        /// The invocation it is for.
        id: InvocationId,
        /// The [`InboxMessage`], encoded.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
}

/// An invocation waiting on another's result without being its caller: an attach, or a
/// duplicate call (same idempotency key) whose result goes to the first caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultWaiter {
    /// The invocation whose result is awaited.
    pub source: InvocationId,
    /// The waiting invocation.
    pub waiter: InvocationId,
    /// Its waiting entry.
    pub index: u32,
    /// The entry is a `Call` (else an `Attach`).
    pub call: bool,
}

/// The wake-up index of a cancellation request (no journal entry has it).
pub const CANCEL_WAKE: u32 = u32::MAX;

/// The state of one object or workflow key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StateScope {
    /// Object or workflow name.
    pub service: String,
    /// Its key.
    pub key: String,
}

impl StateScope {
    /// The key a target runs on (empty for unkeyed services, which have no state).
    pub fn of(target: &Target) -> Self {
        Self {
            service: target.service.clone(),
            key: target.key.clone().unwrap_or_default(),
        }
    }
}

impl WriteOp {
    /// The partition key of the row it writes (an invocation's, or that of the object or
    /// workflow key whose state or promises it changes); `None` for the inbox's rows, which
    /// any process writes.
    ///
    /// ```
    /// use restate_runtime::storage::WriteOp;
    /// assert_eq!(WriteOp::InboxDone { seqs: vec![1] }.partition_key(), None);
    /// ```
    pub fn partition_key(&self) -> Option<u64> {
        match self {
            Self::PutInvocation { id, .. }
            | Self::PutJournal { id, .. }
            | Self::DeleteInvocation { id }
            | Self::Wake { id, .. }
            | Self::ClearWakes { id, .. }
            | Self::RequestCancel { id } => Some(id.partition_key()),
            Self::AddResultWaiter { source, .. } | Self::ClearResultWaiters { source } => {
                Some(source.partition_key())
            }
            Self::SetState { scope, .. }
            | Self::ClearState { scope, .. }
            | Self::ClearAllState { scope }
            | Self::PutPromise { scope, .. }
            | Self::ClearPromises { scope }
            | Self::AddPromiseWaiter { scope, .. }
            | Self::ClearPromiseWaiters { scope, .. } => {
                Some(crate::ids::partition_key_of(&scope.service, &scope.key))
            }
            Self::InboxDone { .. } | Self::Forward { .. } => None,
        }
    }

    /// Sends `message` to the inbox of `id`'s partition with the batch.
    pub fn forward(id: InvocationId, message: &InboxMessage) -> Self {
        Self::Forward {
            id,
            encoded: records::encode(message),
        }
    }

    /// Put an invocation record.
    pub fn put_invocation(id: InvocationId, record: &InvocationRecord) -> Self {
        let expires_at_ms = match &record.status {
            Status::Completed { expires_at_ms, .. } => Some(*expires_at_ms),
            _ => None,
        };
        let unfinished = expires_at_ms
            .is_none()
            .then(|| UnfinishedHint::of(record).encode());
        Self::PutInvocation {
            id,
            encoded: records::encode(record),
            expires_at_ms,
            unfinished,
            stored_before: true,
        }
    }

    /// Put an invocation record that was never stored before.
    pub fn put_new_invocation(id: InvocationId, record: &InvocationRecord) -> Self {
        let mut op = Self::put_invocation(id, record);
        if let Self::PutInvocation { stored_before, .. } = &mut op {
            *stored_before = false;
        }
        op
    }

    /// About how many bytes this operation carries: what the writer's queue and its commit
    /// groups are bounded by.
    pub(crate) fn size(&self) -> usize {
        /// Ids, indexes and framing.
        const FIXED: usize = 32;
        let scope_len = |s: &StateScope| s.service.len() + s.key.len();
        FIXED
            + match self {
                Self::PutInvocation {
                    encoded,
                    unfinished,
                    ..
                } => encoded.len() + unfinished.as_ref().map_or(0, Vec::len),
                Self::PutJournal { encoded, .. } => encoded.len(),
                Self::SetState { scope, name, value } => {
                    scope_len(scope) + name.len() + value.len()
                }
                Self::PutPromise {
                    scope,
                    name,
                    encoded,
                } => scope_len(scope) + name.len() + encoded.len(),
                Self::ClearState { scope, name }
                | Self::AddPromiseWaiter { scope, name, .. }
                | Self::ClearPromiseWaiters { scope, name } => scope_len(scope) + name.len(),
                Self::ClearAllState { scope } | Self::ClearPromises { scope } => scope_len(scope),
                Self::ClearWakes { indexes, .. } => 4 * indexes.len(),
                Self::InboxDone { seqs } => 8 * seqs.len(),
                Self::Forward { encoded, .. } => encoded.len(),
                Self::DeleteInvocation { .. }
                | Self::Wake { .. }
                | Self::AddResultWaiter { .. }
                | Self::ClearResultWaiters { .. }
                | Self::RequestCancel { .. } => 0,
            }
    }

    /// Put a journal entry.
    pub fn put_journal(id: InvocationId, index: u32, entry: &JournalEntry) -> Self {
        Self::PutJournal {
            id,
            index,
            encoded: records::encode(entry),
        }
    }
}

/// The due time an encoded recovery hint records.
pub(crate) fn hint_due(hint: &[u8]) -> Result<Option<u64>, StorageError> {
    match UnfinishedHint::encoded_due(hint) {
        Some(due) => Ok(due),
        None => Ok(UnfinishedHint::decode(hint)?.hint.due_at_ms),
    }
}

/// Why new work is refused while the writer is behind: more bytes wait to be committed than
/// its bound. An overload, not a failure: the engine answers it as one (429 with
/// `Retry-After`), and the same request succeeds once the writer catches up.
///
/// ```
/// let busy = restate_runtime::storage::WriterBusy { queued: 70 << 20, max: 64 << 20 };
/// assert!(busy.to_string().contains("RESTATE_WRITER_QUEUE_BYTES"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "writer busy: {queued} bytes wait to be committed, above the bound of {max} \
     (RESTATE_WRITER_QUEUE_BYTES); new work is refused until the writer catches up"
)]
pub struct WriterBusy {
    /// Bytes submitted and not yet committed.
    pub queued: usize,
    /// The bound they are over.
    pub max: usize,
}

/// New work is refused while more than `max` bytes wait for the writer.
pub(crate) fn check_writer_queue(queued: usize, max: usize) -> Result<(), WriterBusy> {
    if queued > max {
        return Err(WriterBusy { queued, max });
    }
    Ok(())
}

/// Resolves once the batch it belongs to is durable (or failed).
pub struct CommitWaiter(oneshot::Receiver<Result<(), StorageError>>);

impl CommitWaiter {
    pub(crate) fn new(rx: oneshot::Receiver<Result<(), StorageError>>) -> Self {
        Self(rx)
    }
}

impl Future for CommitWaiter {
    type Output = Result<(), StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StorageError::Closed)))
    }
}

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// Durable transactions committed.
    pub commits: u64,
    /// Batches (requests) committed; `batches / commits` is the mean group size.
    pub batches: u64,
    /// Total time spent in commits, in microseconds.
    pub commit_micros: u64,
    /// Durable commits of the whole store that let the write-ahead log start over.
    pub checkpoints: u64,
    /// Total time spent in checkpoints, in microseconds (they run beside the commits).
    pub checkpoint_micros: u64,
    /// Time commits waited for a checkpoint, in microseconds: a log segment filled before the
    /// previous checkpoint ended, a group larger than a segment, or the store was idle.
    pub checkpoint_wait_micros: u64,
    /// The longest checkpoint so far, in microseconds.
    pub checkpoint_max_micros: u64,
    /// Bytes of the batches committed (as [`WriteOp`]s carry them, before encoding).
    pub bytes: u64,
    /// Bytes submitted and not yet committed: above a bound, new work is refused.
    pub queued_bytes: u64,
    /// How long each commit took, as a histogram.
    pub commit_latency: CommitLatency,
}

/// Commit durations in buckets of doubling width, from 100 µs to about 3.3 s (and above), as
/// a Prometheus histogram counts them.
///
/// ```
/// let mut latency = restate_runtime::storage::CommitLatency::default();
/// latency.observe(std::time::Duration::from_micros(150));
/// let buckets: Vec<(f64, u64)> = latency.buckets().collect();
/// assert_eq!((buckets[0], buckets[1]), ((0.0001, 0), (0.0002, 1)));
/// assert_eq!(buckets.last(), Some(&(f64::INFINITY, 0)));
/// assert_eq!((latency.count(), latency.sum_seconds()), (1, 0.00015));
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CommitLatency {
    /// Commits per bucket (not cumulative), the last one for everything above.
    counts: [u64; LATENCY_BUCKETS + 1],
    sum_micros: u64,
}

/// Upper bounds: 100 µs · 2^i.
const LATENCY_BUCKETS: usize = 16;

impl CommitLatency {
    /// Counts one commit that took `took`.
    pub fn observe(&mut self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (0..LATENCY_BUCKETS)
            .find(|i| micros <= 100 << i)
            .unwrap_or(LATENCY_BUCKETS);
        self.counts[bucket] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Each bucket's upper bound in seconds (the last one infinite) and the commits that fell
    /// in it (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, count)| {
            let bound = match i < LATENCY_BUCKETS {
                true => (100u64 << i) as f64 / 1e6,
                false => f64::INFINITY,
            };
            (bound, *count)
        })
    }

    /// Commits counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their total time, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

/// The interface between the engine and a store.
pub trait Storage: Send + Sync + 'static {
    /// Queues a batch for the writer; batches commit in submission order.
    fn submit(&self, ops: Vec<WriteOp>) -> CommitWaiter;
    /// Resolves once every batch submitted before is committed, as far as the partition of
    /// `partition_key` goes: on a shared database a write to that partition refused since
    /// this process took it (the partition was taken by another process, or went with a
    /// write refused for one) makes this an error too, where an empty batch would only say
    /// that the writes before it were decided. A store of one process refuses nothing
    /// without stopping: an empty batch.
    fn barrier(&self, partition_key: u64) -> CommitWaiter {
        self.submit_fenced(Vec::new(), partition_key)
    }
    /// [`Storage::submit`] of a batch that commits only if every write to the partition of
    /// `partition_key` submitted before it committed too, as if the batch wrote that
    /// partition: on a shared database, a batch that acts on another invocation's result
    /// seen before that result's commit was decided. A store of one process refuses nothing
    /// without stopping: a plain batch.
    fn submit_fenced(&self, ops: Vec<WriteOp>, partition_key: u64) -> CommitWaiter {
        let _ = partition_key;
        self.submit(ops)
    }
    /// [`Storage::submit`] (or [`Storage::submit_fenced`] with `fenced_on`) of a batch that
    /// writes the records of new invocations sent to object keys, each of which the batch's
    /// transaction places ([`Placement`]): as written, or, when messages for its key wait in
    /// the inbox of its partition, into that inbox behind them. Only a shared store is given
    /// placements; a store of one process has no inbox that another process fills.
    fn submit_placing(
        &self,
        ops: Vec<WriteOp>,
        fenced_on: Option<u64>,
        placements: Vec<std::sync::Arc<Placement>>,
    ) -> CommitWaiter {
        drop(placements);
        match fenced_on {
            Some(key) => self.submit_fenced(ops, key),
            None => self.submit(ops),
        }
    }
    /// One invocation record.
    fn invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>, StorageError>;
    /// [`Storage::invocation`] without blocking the caller's thread while the backend reads
    /// (one over a network answers later; a local one answers at once, as here).
    fn invocation_async(&self, id: &InvocationId) -> RecordWaiter {
        Box::pin(std::future::ready(self.invocation(id)))
    }
    /// [`Storage::invocation_async`] of an id derived from a key (an idempotency key's, a
    /// workflow run's), which is new more often than not: a backend that knows which of them
    /// it holds answers `None` for one it does not without reading.
    fn derived_invocation_async(&self, id: &InvocationId) -> RecordWaiter {
        self.invocation_async(id)
    }
    /// Which of `ids` have a record (in their order).
    fn stored(&self, ids: &[InvocationId]) -> Result<Vec<bool>, StorageError> {
        ids.iter()
            .map(|id| Ok(self.invocation(id)?.is_some()))
            .collect()
    }
    /// The journal of one invocation, by index.
    fn journal(&self, id: &InvocationId) -> Result<Vec<(u32, JournalEntry)>, StorageError>;
    /// One state entry of a key.
    fn state(&self, scope: &StateScope, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// [`Storage::state`] without blocking the caller's thread while the backend reads (a
    /// handler's state read over a network; a local store answers at once, as here).
    fn state_async(&self, scope: &StateScope, name: &str) -> StateWaiter {
        Box::pin(std::future::ready(self.state(scope, name)))
    }
    /// The names of a key's state entries, sorted.
    fn state_keys(&self, scope: &StateScope) -> Result<Vec<String>, StorageError>;
    /// A completed durable promise of a workflow key.
    fn promise(&self, scope: &StateScope, name: &str) -> Result<Option<Outcome>, StorageError>;
    /// Up to `limit` invocations in id order, starting after `after`.
    fn invocations(
        &self,
        after: Option<InvocationId>,
        limit: usize,
    ) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError>;
    /// The invocations (and entry indexes) waiting on a promise.
    fn promise_waiters(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Vec<(InvocationId, u32)>, StorageError>;
    /// Every invocation that has not completed.
    fn unfinished(&self) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError>;
    /// The invocations that have not completed and that `keep` accepts from their hint's head
    /// (`None` for a hint written by an older binary, which has none), for recovery. A backend
    /// that stores the head apart (redb) passes over the others without decoding or keeping
    /// their hints; this default filters what [`Storage::unfinished`] returns.
    #[allow(clippy::type_complexity)]
    fn unfinished_where(
        &self,
        keep: &mut dyn FnMut(InvocationId, Option<HintHead>) -> bool,
    ) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        let mut all = self.unfinished()?;
        all.retain(|(id, hint)| keep(*id, Some(hint.head())));
        Ok(all)
    }
    /// Up to `limit` unfinished invocations with a timer due at or before `until_ms`, in
    /// (due time, id) order, starting after `after`: the due-time index the timers load from.
    fn due(
        &self,
        after: Option<(u64, InvocationId)>,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InvocationId)>, StorageError>;
    /// How many entries the due-time index holds.
    fn due_len(&self) -> Result<u64, StorageError>;
    /// The result waiters of `source`, or of every invocation (`None`, for recovery).
    fn result_waiters(
        &self,
        source: Option<&InvocationId>,
    ) -> Result<Vec<ResultWaiter>, StorageError>;
    /// The invocations with a wake-up ([`WriteOp::Wake`]) no suspension has seen since, each
    /// once: recovery resumes those whose record says suspended.
    fn woken(&self) -> Result<Vec<InvocationId>, StorageError>;
    /// Up to `limit` finished invocations whose retention ended before `now_ms`, of the
    /// partitions this process runs ([`Storage::owned`]: the others are their owners' to
    /// purge), with their targets (a workflow's `run` takes the workflow's state and promises with it; `None`
    /// when the record is gone but its expiry entry is not).
    #[allow(clippy::type_complexity)]
    fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(InvocationId, Option<Target>)>, StorageError>;
    /// Number of partitions, fixed when the store was created.
    fn partitions(&self) -> u32;
    /// Writer counters.
    fn writer_stats(&self) -> WriterStats;
    /// Holds the reason once a commit, a sync or the writer itself failed: from then on
    /// nothing is acknowledged, and the engine stops the process (law 10).
    fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>>;
    /// The store's secret, drawn when it was created: awakeable ids and `ctx.rand()` seeds
    /// are derived from it, so that outsiders can compute neither.
    fn secret(&self) -> [u8; 32];
    /// Whether there is room for new work (an invocation from outside): an error, saying why,
    /// while the disk is nearly full. Work already accepted still commits, into the reserve.
    fn admit_new_work(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Whether the writer keeps up: [`WriterBusy`] while more bytes wait to be committed than
    /// the store's bound, when new work from outside is refused as an overload.
    fn writer_busy(&self) -> Result<(), WriterBusy> {
        Ok(())
    }
    /// Batches submitted and reads asked (a backend over a network answers them later) and not
    /// yet answered: a test runtime is idle only at none.
    fn unanswered(&self) -> usize {
        0
    }
    /// Whether this process takes part in running invocations (and may
    /// [`submit`](Self::submit)) now. A store of one process does from the start; on a shared
    /// database a process does once it joined those that lease its partitions (not while a
    /// binary of an older schema runs the whole database: it serves by forwarding meanwhile),
    /// until it is handed over after a drain.
    fn ownership(&self) -> tokio::sync::watch::Receiver<bool> {
        tokio::sync::watch::channel(true).1
    }
    /// The partitions this process runs now, and their changes: every one for a store of one
    /// process; on a shared database those it holds the lease of, numbered
    /// ([`Partitions::version`]) so that [`left`](Self::left) can name the set acted on. An
    /// invocation runs only in the process whose set holds its partition, and its partition
    /// is written only there (and, by what was queued before, while that process lets go of
    /// it: until its engine said it [`left`](Self::left) it).
    fn owned(&self) -> tokio::sync::watch::Receiver<Partitions> {
        tokio::sync::watch::channel(Partitions::all(self.partitions())).1
    }
    /// On a shared database: until when (in time since boot, `CLOCK_BOOTTIME`) the leases of the
    /// partitions it runs may be taken for held, and its changes; `None` until the first
    /// renewal. A process paused past that moment (SIGSTOP, a stall) may have lost them to
    /// another process without knowing yet: it runs no side effect before the next lease round
    /// says. A store of one process has no leases (`None` here).
    fn lease_clock(&self) -> Option<tokio::sync::watch::Receiver<Option<std::time::Duration>>> {
        None
    }
    /// The engine acted on `observed`, a set [`owned`](Self::owned) handed it (its
    /// [`version`](Partitions::version) says which): it runs none of the partitions outside
    /// it, and every write it submitted for them is decided. A shared database may now let
    /// another process take those this one offered back up to that version. A store of one
    /// process has nothing to do.
    fn left(&self, observed: &Partitions) {
        let _ = observed;
    }
    /// Leaves this process's lease on a shared database free for another process to take
    /// over at once (`true`: a drained process hands its invocations over), or holds it again
    /// (`false`); resolves once a transaction recorded the change. Until another process takes
    /// the lease this one goes on committing; once one has, [`ownership`](Self::ownership)
    /// turns `false` and writes are refused. A store of one process has no lease to release.
    fn release_lease(&self, release: bool) -> CommitWaiter {
        let _ = release;
        let (done, rx) = oneshot::channel();
        let _ = done.send(Ok(()));
        CommitWaiter::new(rx)
    }
    /// Writes `message` for `id` durably into the inbox of `id`'s partition, for its owner
    /// (a store of one process never forwards: it refuses). An [`InboxMessage::Invoke`] for an
    /// invocation that exists already, stored or forwarded, writes nothing and says so, in
    /// the same transaction: a duplicate is decided once across the deployment.
    fn forward(&self, id: InvocationId, message: InboxMessage) -> ForwardWaiter {
        let _ = (id, message);
        Box::pin(std::future::ready(Err(StorageError::Backend(
            "this store serves one process: there is no other to forward to".into(),
        ))))
    }
    /// Messages of the inboxes this process owns, oldest first: up to `limit`, and no more
    /// after the first that take `max_bytes` together. Messages this binary cannot decode (a
    /// newer one's) are left for it, and logged.
    fn inbox(&self, limit: usize, max_bytes: usize) -> Result<Vec<Inbound>, StorageError> {
        let _ = (limit, max_bytes);
        Ok(Vec::new())
    }
    /// What the inboxes hold for `id`: a message for it (one that starts it among them), or
    /// any message for its partition key (its object or workflow key).
    fn inbox_pending(&self, id: &InvocationId) -> Result<InboxPending, StorageError> {
        let _ = id;
        Ok(InboxPending::default())
    }
    /// [`Storage::inbox_pending`] without blocking the caller's thread while the backend
    /// reads (a request from outside, checked before it is taken in).
    fn inbox_pending_async(&self, id: &InvocationId) -> InboxPendingWaiter {
        Box::pin(std::future::ready(self.inbox_pending(id)))
    }
    /// On a shared database, for a new invocation whose id a request names (an idempotency
    /// key's, a workflow run's) created here from outside: the verdict of the commit that
    /// first stores its record, which decides it against another process that accepted the
    /// same request and forwarded it at the same moment. `None` (the default) for a store of
    /// one process, where every request is decided in memory.
    fn first_acceptance(&self, id: InvocationId) -> Option<std::sync::Arc<Acceptance>> {
        let _ = id;
        None
    }
    /// Notifications from other processes on the same database (`None` for a store of one
    /// process, where every change happens in this one).
    fn signals(&self) -> Option<Signals> {
        None
    }
    /// On a shared database: the processes of the deployment, which partition each runs and
    /// where its ingress is reached, kept by the backend (`None` for a store of one process).
    fn peers(&self) -> Option<Peers> {
        None
    }
    /// Copies the store as it is at one commit into the folder `dir` (created, or empty),
    /// while it keeps serving: the folder opens as a data folder. Stores without an online
    /// backup of their own refuse.
    fn backup(&self, dir: &std::path::Path) -> Result<BackupReport, BackupError> {
        let _ = dir;
        Err(BackupError::Unsupported(
            "this store has no online backup".into(),
        ))
    }
    /// Flushes what is queued and stops the writer.
    fn close(&self);
}

/// Runs `wait`, which blocks this thread, handing the tokio worker it runs on (if any) to
/// another thread first: then only its caller waits, not every task queued behind it there.
pub(crate) fn hand_worker_on<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

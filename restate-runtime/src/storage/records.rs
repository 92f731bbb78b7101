//! What the engine stores: invocation records and journal entries, with their versioned encoding.
//!
//! Every stored value is one format-version byte followed by postcard. Payloads stay opaque
//! bytes (the handler's JSON), never re-encoded.

use serde::{Deserialize, Serialize};

use crate::error::TerminalError;
use crate::ids::InvocationId;

/// Version byte in front of every encoded record; bump it when a record's shape changes.
pub(crate) const RECORD_VERSION: u8 = 1;

/// Which handler an invocation runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// Service, object or workflow name.
    pub service: String,
    /// Handler name.
    pub handler: String,
    /// Object or workflow key (`None` for services).
    pub key: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}/{}/{}", self.service, key, self.handler),
            None => write!(f, "{}/{}", self.service, self.handler),
        }
    }
}

/// How an invocation ended (or a journaled step, or a call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The output payload.
    Success(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A terminal error.
    Failure {
        /// The terminal error's code.
        code: u16,
        /// The terminal error's message.
        message: String,
    },
    /// A terminal error with metadata (added after `Failure`, so records written without
    /// metadata keep the encoding older binaries read).
    FailureWithMetadata {
        /// The terminal error's code.
        code: u16,
        /// The terminal error's message.
        message: String,
        /// Its metadata pairs, ordered by key.
        metadata: Vec<(String, String)>,
    },
    /// A debounced invocation that did not run: a later one of its burst ran for it (added
    /// after `FailureWithMetadata`, so older records keep their encoding).
    Superseded {
        /// The invocation that ran.
        by: InvocationId,
        /// What the one that ran ended with (never itself superseded).
        outcome: Box<Outcome>,
    },
}

impl Outcome {
    /// The outcome recording `error`, in the older `Failure` form when it has no metadata.
    pub fn failure(error: &TerminalError) -> Self {
        let (code, message) = (error.code(), error.message().to_owned());
        if error.metadata().is_empty() {
            Self::Failure { code, message }
        } else {
            let metadata = error
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Self::FailureWithMetadata {
                code,
                message,
                metadata,
            }
        }
    }

    /// The payload, or the terminal error this outcome records.
    pub fn into_result(self) -> Result<Vec<u8>, TerminalError> {
        match self {
            Self::Success(bytes) => Ok(bytes),
            Self::Failure { code, message } => Err(TerminalError::new_with_code(code, message)),
            Self::FailureWithMetadata {
                code,
                message,
                metadata,
            } => Err(TerminalError::from_parts(code, message, metadata)),
            Self::Superseded { outcome, .. } => outcome.into_result(),
        }
    }

    /// Whether it is a success (for a superseded invocation: whether the one that ran
    /// succeeded).
    pub fn is_success(&self) -> bool {
        match self {
            Self::Success(_) => true,
            Self::Superseded { outcome, .. } => outcome.is_success(),
            _ => false,
        }
    }

    /// The invocation that ran in this one's place, for a superseded (debounced) invocation.
    pub fn superseded_by(&self) -> Option<InvocationId> {
        match self {
            Self::Superseded { by, .. } => Some(*by),
            _ => None,
        }
    }

    /// What ran: this outcome, or for a superseded invocation the outcome of the one that ran.
    pub fn ran(&self) -> &Outcome {
        match self {
            Self::Superseded { outcome, .. } => outcome.ran(),
            other => other,
        }
    }
}

/// Where an invocation is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its execution time (a delayed send).
    Scheduled {
        /// When it runs (ms since the epoch).
        at_ms: u64,
    },
    /// Running or about to run (after a restart it resumes by replay).
    Runnable,
    /// Waiting (timer, call, awakeable, promise) with no task or memory held; resumed by replay
    /// when the wait completes or at `wake_at_ms`.
    Suspended {
        /// When a timer resumes it (ms since the epoch); `None` when only a completion can.
        wake_at_ms: Option<u64>,
    },
    /// Retries exhausted or non-determinism: waits for a resume from the admin API.
    Paused,
    /// Finished; `outcome` is the result.
    Completed {
        /// The result.
        outcome: Outcome,
        /// When it finished (ms since the epoch).
        completed_at_ms: u64,
        /// When its retention ends and it is purged (ms since the epoch).
        expires_at_ms: u64,
    },
}

impl Status {
    /// The name shown in the admin API and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Scheduled { .. } => "scheduled",
            Self::Runnable => "running",
            Self::Suspended { .. } => "suspended",
            Self::Paused => "paused",
            Self::Completed { .. } => "completed",
        }
    }
}

/// One invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvocationRecord {
    /// The handler it runs.
    pub target: Target,
    /// The input payload, as received.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// The headers the handler sees (names in lower case).
    pub headers: Vec<(String, String)>,
    /// The caller's idempotency key, if any (duplicates map to this invocation).
    pub idempotency_key: Option<String>,
    /// Where it is in its life.
    pub status: Status,
    /// Attempts made so far (the first execution is attempt 1).
    pub attempts: u32,
    /// The error of the latest failed attempt, for the admin API.
    pub last_error: Option<String>,
    /// When it was submitted (ms since the epoch).
    pub created_at_ms: u64,
    /// When the record last changed (ms since the epoch).
    pub modified_at_ms: u64,
    /// Where the result goes besides attach waiters: the calling invocation and its journal index.
    pub caller: Option<(InvocationId, u32)>,
    /// Arrival order, increasing across restarts: a key's queue is rebuilt in this order.
    pub seq: u64,
    /// Cancellation was requested; it is delivered once, as a terminal error (409) at the
    /// handler's next await point, recorded in the journal entry where it landed.
    pub cancel_requested: bool,
    /// The cancellation has been delivered (later operations run normally: compensation).
    pub cancel_delivered: bool,
    /// The application version that accepted it (`RESTATE_APP_VERSION`); `None` for one
    /// stored by a binary that did not record versions.
    pub version: Option<String>,
    /// Its failed attempts since it last started afresh and when the next is due, stored
    /// with each failure: a restart goes on counting and waits out the rest of the delay.
    /// `None` for one stored by a binary that did not record them.
    pub retry: Option<Retry>,
    /// Attempts begun after a restart or a takeover that have not ended since, stored before
    /// each such attempt runs: the next restart counts them as ended by the process (a crash,
    /// a kill, the machine) and pauses the invocation past
    /// [`Config::max_interrupted_attempts`](crate::Config). `None` once an attempt ends (or for a
    /// record of a binary that did not count them).
    pub interrupted: Option<Interrupted>,
}

/// Attempts of an invocation that its process may have ended during, and where its journal
/// stood when the last of them began: one that got further since was not stuck.
///
/// ```
/// use restate_runtime::storage::Interrupted;
/// let interrupted = Interrupted { attempts: 2, journal_len: 5 };
/// assert_eq!(interrupted.attempts, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interrupted {
    /// Attempts begun in a row, each by a process that found the one before it unended.
    pub attempts: u32,
    /// Journal entries the last of them began with.
    pub journal_len: u32,
}

/// Where an invocation's retries stand after a failed attempt.
///
/// ```
/// use restate_runtime::storage::Retry;
/// let retry = Retry { failures: 2, next_at_ms: 1_700_000_000_000 };
/// assert_eq!(retry.failures, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Failed attempts since it started afresh (its first attempt, or a resume after it
    /// suspended or was paused): what its retry policy counts.
    pub failures: u32,
    /// When the next attempt is due (ms since the epoch).
    pub next_at_ms: u64,
}

impl InvocationRecord {
    /// Its attempt has ended in `status` at `now_ms` (completed, paused, suspended): what the
    /// attempts kept in the record for a restart (the retries' count and wait, the attempts
    /// its process ended during) goes, so a resume counts afresh.
    pub(crate) fn end_attempt(&mut self, status: Status, now_ms: u64) {
        self.status = status;
        self.modified_at_ms = now_ms;
        self.retry = None;
        self.interrupted = None;
    }

    /// When it reached its target (ms since the epoch): when it was submitted, or a delayed
    /// one when it fell due.
    pub(crate) fn arrived_ms(&self) -> u64 {
        match self.status {
            Status::Scheduled { at_ms } => at_ms.max(self.created_at_ms),
            _ => self.created_at_ms,
        }
    }
}

/// The fields of a record before `version` was appended: postcard writes a struct as its
/// fields in order with nothing around them, so a stored record is these fields, then the
/// version when its binary wrote one.
#[derive(Deserialize)]
struct RecordBeforeVersion {
    target: Target,
    #[serde(with = "serde_bytes")]
    input: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    status: Status,
    attempts: u32,
    last_error: Option<String>,
    created_at_ms: u64,
    modified_at_ms: u64,
    caller: Option<(InvocationId, u32)>,
    seq: u64,
    cancel_requested: bool,
    cancel_delivered: bool,
}

impl<'de> Deserialize<'de> for InvocationRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = InvocationRecord;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an invocation record")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<InvocationRecord, A::Error> {
                let r: RecordBeforeVersion = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                // A record written before versions ends here, one written before retries
                // after the version, one before interrupted attempts after the retry:
                // reading on finds no more bytes.
                let version = seq
                    .next_element::<Option<String>>()
                    .ok()
                    .flatten()
                    .flatten();
                let retry = seq.next_element::<Option<Retry>>().ok().flatten().flatten();
                let interrupted = seq
                    .next_element::<Option<Interrupted>>()
                    .ok()
                    .flatten()
                    .flatten();
                Ok(InvocationRecord {
                    target: r.target,
                    input: r.input,
                    headers: r.headers,
                    idempotency_key: r.idempotency_key,
                    status: r.status,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    created_at_ms: r.created_at_ms,
                    modified_at_ms: r.modified_at_ms,
                    caller: r.caller,
                    seq: r.seq,
                    cancel_requested: r.cancel_requested,
                    cancel_delivered: r.cancel_delivered,
                    version,
                    retry,
                    interrupted,
                })
            }
        }
        deserializer.deserialize_tuple(4, Fields)
    }
}

#[cfg(test)]
impl InvocationRecord {
    /// A record of handler `h` of `service` (on `key`) in `status`: a first attempt with no
    /// input or headers, created at 1 ms, what the storage and engine tests build on.
    pub(crate) fn for_test(service: &str, key: Option<&str>, status: Status) -> Self {
        Self {
            target: Target {
                service: service.into(),
                handler: "h".into(),
                key: key.map(Into::into),
            },
            input: Vec::new(),
            headers: Vec::new(),
            idempotency_key: None,
            status,
            attempts: 1,
            last_error: None,
            created_at_ms: 1,
            modified_at_ms: 1,
            caller: None,
            seq: 1,
            cancel_requested: false,
            cancel_delivered: false,
            version: None,
            retry: None,
            interrupted: None,
        }
    }
}

/// What recovery needs of an unfinished invocation without reading its whole record: a
/// suspended one stays on disk, only holding its key and maybe a timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedHint {
    /// Arrival order.
    pub seq: u64,
    /// Its target (for the key it holds).
    pub target: Target,
    /// `Some(wake-up time)` for a suspended invocation; `None` for one to load and run.
    pub suspended: Option<Option<u64>>,
    /// When a timer is due for it (a delayed start, or a suspended sleep's wake-up): the
    /// store's due-time index holds it under that time.
    pub due_at_ms: Option<u64>,
}

/// The hint's layout before `due_at_ms` (format 1), as older binaries and their logs wrote it.
#[derive(Deserialize)]
struct UnfinishedHintV1 {
    seq: u64,
    target: Target,
    suspended: Option<Option<u64>>,
}

/// Version byte of an encoded [`UnfinishedHint`] with its head in front: a byte of flags
/// (bit 0: it has a due time; bit 1: suspended; bit 2: keyed), the due time and the arrival
/// number (u64 big-endian each), read without decoding the rest ([`HintHead`]).
const HINT_VERSION: u8 = 3;
/// The version byte and the head in front of a format-3 hint.
const HINT_HEADER: usize = 18;
/// The format before the head: a byte saying whether it has a due time, and the time.
const HINT_VERSION_DUE_ONLY: u8 = 2;
const HINT_HEADER_DUE_ONLY: usize = 10;

/// What an encoded hint says in front of it, for recovery to pass over the invocations that
/// wait on disk without decoding (or even keeping) their hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintHead {
    /// Arrival order.
    pub seq: u64,
    /// When a timer is due for it.
    pub due_at_ms: Option<u64>,
    /// It is suspended.
    pub suspended: bool,
    /// Its target has a key (an object or workflow key it may hold).
    pub keyed: bool,
}

impl UnfinishedHint {
    pub(crate) fn of(record: &InvocationRecord) -> Self {
        Self {
            seq: record.seq,
            target: record.target.clone(),
            suspended: match record.status {
                Status::Suspended { wake_at_ms } => Some(wake_at_ms),
                _ => None,
            },
            due_at_ms: due_at(&record.status),
        }
    }

    /// What its encoding carries in front, for a backend to filter recovery's scan by.
    ///
    /// ```
    /// use restate_runtime::storage::{HintHead, Target, UnfinishedHint};
    /// let hint = UnfinishedHint {
    ///     seq: 7,
    ///     target: Target {
    ///         service: "PaymentTracker".into(),
    ///         handler: "remind".into(),
    ///         key: Some("in_1".into()),
    ///     },
    ///     suspended: None,
    ///     due_at_ms: Some(60_000),
    /// };
    /// let head: HintHead = hint.head();
    /// assert!(head.keyed && !head.suspended);
    /// ```
    pub fn head(&self) -> HintHead {
        HintHead {
            seq: self.seq,
            due_at_ms: self.due_at_ms,
            suspended: self.suspended.is_some(),
            keyed: self.target.key.is_some(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let head = self.head();
        let flags = u8::from(head.due_at_ms.is_some())
            | u8::from(head.suspended) << 1
            | u8::from(head.keyed) << 2;
        let mut out = sized_buffer(self, HINT_HEADER);
        out.extend([HINT_VERSION, flags]);
        out.extend(head.due_at_ms.unwrap_or(0).to_be_bytes());
        out.extend(head.seq.to_be_bytes());
        postcard::to_extend(self, out).expect("hint encodes")
    }

    /// The head of an encoded hint; `None` for a hint of an older format (decode it).
    pub(crate) fn encoded_head(bytes: &[u8]) -> Option<HintHead> {
        match bytes {
            [HINT_VERSION, flags, rest @ ..] if rest.len() >= 16 => Some(HintHead {
                due_at_ms: (flags & 1 == 1).then(|| be_u64(&rest[..8])),
                seq: be_u64(&rest[8..16]),
                suspended: flags & 2 == 2,
                keyed: flags & 4 == 4,
            }),
            _ => None,
        }
    }

    /// The due time an encoded hint records, read from its header; `None` when it is a
    /// format-1 hint (decode it).
    pub(crate) fn encoded_due(bytes: &[u8]) -> Option<Option<u64>> {
        match bytes {
            [HINT_VERSION | HINT_VERSION_DUE_ONLY, flags, due @ ..] if due.len() >= 8 => {
                Some((flags & 1 == 1).then(|| be_u64(&due[..8])))
            }
            _ => None,
        }
    }

    /// A hint as stored, of either format. A format-1 hint does not know a delayed start's
    /// time: `known_due` is false for one that is not suspended (its record knows).
    pub(crate) fn decode(bytes: &[u8]) -> Result<DecodedHint, DecodeRecordError> {
        match bytes.split_first() {
            Some((&HINT_VERSION, _)) if bytes.len() >= HINT_HEADER => Ok(DecodedHint {
                hint: postcard::from_bytes(&bytes[HINT_HEADER..])?,
                known_due: true,
            }),
            Some((&HINT_VERSION_DUE_ONLY, _)) if bytes.len() >= HINT_HEADER_DUE_ONLY => {
                Ok(DecodedHint {
                    hint: postcard::from_bytes(&bytes[HINT_HEADER_DUE_ONLY..])?,
                    known_due: true,
                })
            }
            Some((1, rest)) => {
                let v1: UnfinishedHintV1 = postcard::from_bytes(rest)?;
                Ok(DecodedHint {
                    known_due: v1.suspended.is_some(),
                    hint: Self {
                        due_at_ms: v1.suspended.flatten(),
                        seq: v1.seq,
                        target: v1.target,
                        suspended: v1.suspended,
                    },
                })
            }
            Some((&found, _)) => Err(DecodeRecordError::Version { found }),
            None => Err(DecodeRecordError::Version { found: 0 }),
        }
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// A decoded [`UnfinishedHint`], and whether its due time is known (see
/// [`UnfinishedHint::decode`]).
pub(crate) struct DecodedHint {
    pub hint: UnfinishedHint,
    pub known_due: bool,
}

/// When a timer is due for an invocation in `status`: a delayed start, or a suspended sleep.
pub(crate) fn due_at(status: &Status) -> Option<u64> {
    match status {
        Status::Scheduled { at_ms } => Some(*at_ms),
        Status::Suspended { wake_at_ms } => *wake_at_ms,
        _ => None,
    }
}

/// One journaled context operation, in the order the handler made them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalEntry {
    /// A `ctx.run` step and its result.
    Run {
        /// The step's name (checked on replay).
        name: String,
        /// What the closure returned.
        outcome: Outcome,
    },
    /// A one-way message (or delayed message); the new invocation commits with this entry.
    Send {
        /// The handler it runs.
        target: Target,
        /// The new invocation.
        invocation_id: InvocationId,
    },
    /// A request-response call; the callee's completion fills in `outcome`.
    Call {
        /// The handler called.
        target: Target,
        /// The callee invocation.
        invocation_id: InvocationId,
        /// Its result; `None` while it runs.
        outcome: Option<Outcome>,
    },
    /// A state read and the value it saw.
    GetState {
        /// The entry's name.
        name: String,
        /// The value read (JSON bytes); `None` when unset.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// The state names a handler listed.
    StateKeys {
        /// The names, sorted.
        keys: Vec<String>,
    },
    /// A state write (the write itself commits with this entry).
    SetState {
        /// The entry's name.
        name: String,
        /// The value written (JSON bytes).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A state removal.
    ClearState {
        /// The entry's name.
        name: String,
    },
    /// Removal of every state entry of the key.
    ClearAllState,
    /// A durable timer: wakes at this time, across restarts (unless cancelled while waiting).
    Sleep {
        /// When it fires (ms since the epoch).
        wake_at_ms: u64,
        /// A cancellation was delivered while waiting here; a replay fails the same way.
        cancelled: bool,
    },
    /// An awakeable; completed from outside (first completion wins).
    Awakeable {
        /// The value or rejection; `None` until completed.
        outcome: Option<Outcome>,
    },
    /// This handler completed someone's awakeable.
    CompleteAwakeable {
        /// The awakeable's id (`sign_1…`).
        id: String,
    },
    /// Waiting for a workflow's durable promise; filled in when it is completed.
    GetPromise {
        /// The promise's name.
        name: String,
        /// Its value or rejection; `None` until completed.
        outcome: Option<Outcome>,
    },
    /// A look at a durable promise without waiting.
    PeekPromise {
        /// The promise's name.
        name: String,
        /// What the look saw; `None` when not yet completed.
        outcome: Option<Outcome>,
    },
    /// This handler completed a durable promise; `accepted` is false when it was already done.
    CompletePromise {
        /// The promise's name.
        name: String,
        /// False when it was already completed (the handler got a 409).
        accepted: bool,
    },
    /// A combinator's decision, so a replay takes the same branch: which future of a
    /// `select`, `race` or `or_timeout` won, which operation of an `all` failed first, which
    /// one an `unordered` stream yielded next.
    Select {
        /// The position of the future (0 for the first). Encoded as a varint, so entries
        /// written when this was a `u8` (0 or 1) read the same.
        winner: u32,
    },
    /// Waiting for the result of an invocation this handler did not call (by its id).
    Attach {
        /// The invocation waited on.
        invocation_id: InvocationId,
        /// Its result; `None` while it runs.
        outcome: Option<Outcome>,
    },
    /// This handler requested the cancellation of another invocation (`ctx.cancel`).
    CancelInvocation {
        /// The invocation to cancel.
        invocation_id: InvocationId,
    },
    /// A look at another invocation's result without waiting (`handle.output()`).
    GetOutput {
        /// The invocation looked at.
        invocation_id: InvocationId,
        /// Its result when it had finished; `None` while it was running.
        outcome: Option<Outcome>,
    },
    /// `ctx.patched(change)` reached by code that has the change: a replay of this journal
    /// takes the new code's branch. A journal without it at that position predates the change.
    Patch {
        /// The change's id.
        change: String,
    },
}

impl JournalEntry {
    /// The operation's name, as non-determinism errors and the admin API show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Run { .. } => "run",
            Self::Send { .. } => "send",
            Self::Call { .. } => "call",
            Self::GetState { .. } => "get_state",
            Self::StateKeys { .. } => "state_keys",
            Self::SetState { .. } => "set_state",
            Self::ClearState { .. } => "clear_state",
            Self::ClearAllState => "clear_all_state",
            Self::Sleep { .. } => "sleep",
            Self::Awakeable { .. } => "awakeable",
            Self::CompleteAwakeable { .. } => "complete_awakeable",
            Self::Select { .. } => "select",
            Self::GetPromise { .. } => "get_promise",
            Self::PeekPromise { .. } => "peek_promise",
            Self::CompletePromise { .. } => "complete_promise",
            Self::Attach { .. } => "attach",
            Self::CancelInvocation { .. } => "cancel",
            Self::GetOutput { .. } => "get_output",
            Self::Patch { .. } => "patch",
        }
    }
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeRecordError {
    /// Written by a newer (or unknown) format.
    #[error("record has format version {found}, this build reads version {RECORD_VERSION}")]
    Version { found: u8 },
    /// Not a valid record.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] postcard::Error),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoded straight after the tag byte: no second buffer to copy from. Encoding our own
    // plain data types into a Vec cannot fail.
    let mut out = sized_buffer(value, 1);
    out.push(RECORD_VERSION);
    postcard::to_extend(value, out).expect("record encodes")
}

/// An empty buffer with room for `header` bytes and `value` encoded: sized by a counting pass
/// (no allocation), it is allocated once, where growing it from empty reallocated and copied
/// it several times per record, and its memory is the length the writer's queue counts.
fn sized_buffer<T: Serialize + ?Sized>(value: &T, header: usize) -> Vec<u8> {
    let size = postcard::ser_flavors::Size::default();
    let body = postcard::serialize_with_flavor(value, size).expect("record encodes");
    Vec::with_capacity(header + body)
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeRecordError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(DecodeRecordError::Version { found }),
        None => Err(DecodeRecordError::Version { found: 0 }),
    }
}

/// An invocation record's target alone, without decoding its input and journal-sized fields.
pub(crate) fn decode_target(bytes: &[u8]) -> Result<Target, DecodeRecordError> {
    decode_first(bytes)
}

/// The first fields of an encoded value, as `T` lays them out: postcard writes a struct as its
/// fields in order with nothing around them, so a prefix of them decodes alone.
fn decode_first<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeRecordError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => Ok(postcard::take_from_bytes(rest)?.0),
        Some((&found, _)) => Err(DecodeRecordError::Version { found }),
        None => Err(DecodeRecordError::Version { found: 0 }),
    }
}

/// The first fields of an encoded invocation record, borrowed from its bytes: what tells
/// whether its id is derived from its key, without copying its input.
#[derive(Deserialize)]
pub(crate) struct RecordHead<'a> {
    #[serde(borrow)]
    pub(crate) target: TargetRef<'a>,
    #[serde(borrow)]
    _input: &'a [u8],
    #[serde(borrow)]
    _headers: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    pub(crate) idempotency_key: Option<&'a str>,
}

/// A [`Target`] borrowed from a record's bytes.
#[derive(Deserialize)]
pub(crate) struct TargetRef<'a> {
    pub(crate) service: &'a str,
    _handler: &'a str,
    pub(crate) key: Option<&'a str>,
}

/// [`RecordHead`] of an encoded invocation record.
pub(crate) fn decode_head(bytes: &[u8]) -> Result<RecordHead<'_>, DecodeRecordError> {
    decode_first(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_head_decodes_from_its_bytes() {
        let record = InvocationRecord {
            input: b"{}".to_vec(),
            headers: vec![("x-a".into(), "1".into())],
            idempotency_key: Some("ik".into()),
            ..InvocationRecord::for_test("Obj", Some("k"), Status::Runnable)
        };
        let bytes = encode(&record);
        let head = decode_head(&bytes).unwrap();
        assert_eq!(
            (head.target.service, head.target.key, head.idempotency_key),
            ("Obj", Some("k"), Some("ik"))
        );
    }

    #[test]
    fn records_round_trip_and_check_version() {
        let entry = JournalEntry::Run {
            name: "charge".into(),
            outcome: Outcome::Failure {
                code: 402,
                message: "declined".into(),
            },
        };
        let bytes = encode(&entry);
        assert_eq!(decode::<JournalEntry>(&bytes).unwrap(), entry);
        let mut newer = bytes.clone();
        newer[0] = RECORD_VERSION + 1;
        assert!(matches!(
            decode::<JournalEntry>(&newer),
            Err(DecodeRecordError::Version { .. })
        ));
    }

    #[test]
    fn byte_fields_keep_the_encoding_of_a_byte_sequence() {
        // Stored records and log records were written with these fields as plain `Vec<u8>`
        // (a sequence of u8); they are now serialized as bytes in one piece. Both must be
        // the same bytes, in both directions, or older stores would not read.
        let payload: Vec<u8> = (0..=255).chain(0..44).collect();
        let success = encode(&Outcome::Success(payload.clone()));
        let mut as_sequence = vec![RECORD_VERSION, 0];
        as_sequence.extend(postcard::to_stdvec(&payload).unwrap());
        assert_eq!(success, as_sequence);
        assert_eq!(
            decode::<Outcome>(&as_sequence).unwrap(),
            Outcome::Success(payload.clone())
        );

        let read = JournalEntry::GetState {
            name: "n".into(),
            value: Some(payload.clone()),
        };
        #[derive(Serialize)]
        enum Plain {
            #[allow(dead_code)]
            Run,
            #[allow(dead_code)]
            Send,
            #[allow(dead_code)]
            Call,
            GetState {
                name: String,
                value: Option<Vec<u8>>,
            },
        }
        let plain = encode(&Plain::GetState {
            name: "n".into(),
            value: Some(payload),
        });
        assert_eq!(encode(&read), plain);
        assert_eq!(decode::<JournalEntry>(&plain).unwrap(), read);
    }

    #[test]
    fn a_failure_keeps_the_old_encoding_unless_it_has_metadata() {
        let plain = TerminalError::new_with_code(402, "declined");
        let outcome = Outcome::failure(&plain);
        // Variant 1, code 402 as a varint, then the message: what binaries before metadata wrote.
        assert_eq!(encode(&outcome), b"\x01\x01\x92\x03\x08declined");
        assert_eq!(outcome.into_result(), Err(plain.clone()));

        let rich = plain
            .with_metadata("reason", "funds")
            .with_metadata("at", "3");
        let outcome = Outcome::failure(&rich);
        assert!(matches!(outcome, Outcome::FailureWithMetadata { .. }));
        let back: Outcome = decode(&encode(&outcome)).unwrap();
        assert_eq!(back.into_result(), Err(rich));
    }

    #[test]
    fn a_hint_head_is_read_without_decoding_and_older_hints_still_decode() {
        let record = |status, key: Option<&str>| InvocationRecord {
            target: Target {
                service: "S".into(),
                handler: "h".into(),
                key: key.map(Into::into),
            },
            input: vec![],
            headers: vec![],
            idempotency_key: None,
            status,
            attempts: 0,
            last_error: None,
            created_at_ms: 1,
            modified_at_ms: 1,
            caller: None,
            seq: 42,
            cancel_requested: false,
            cancel_delivered: false,
            version: None,
            retry: None,
            interrupted: None,
        };
        let napping = UnfinishedHint::of(&record(
            Status::Suspended {
                wake_at_ms: Some(9),
            },
            Some("k"),
        ));
        assert_eq!(
            UnfinishedHint::encoded_head(&napping.encode()),
            Some(HintHead {
                seq: 42,
                due_at_ms: Some(9),
                suspended: true,
                keyed: true,
            })
        );
        let delayed = UnfinishedHint::of(&record(Status::Scheduled { at_ms: 7 }, None));
        let encoded = delayed.encode();
        assert_eq!(
            UnfinishedHint::encoded_head(&encoded),
            Some(HintHead {
                seq: 42,
                due_at_ms: Some(7),
                suspended: false,
                keyed: false,
            })
        );
        assert_eq!(UnfinishedHint::encoded_due(&encoded), Some(Some(7)));
        assert_eq!(UnfinishedHint::decode(&encoded).unwrap().hint, delayed);
        // Format 2, as stores and logs of the previous binary hold it: no head, the same due
        // time and hint.
        let mut v2 = vec![HINT_VERSION_DUE_ONLY, 1];
        v2.extend(7u64.to_be_bytes());
        v2.extend(postcard::to_stdvec(&delayed).unwrap());
        assert_eq!(UnfinishedHint::encoded_head(&v2), None);
        assert_eq!(UnfinishedHint::encoded_due(&v2), Some(Some(7)));
        assert_eq!(UnfinishedHint::decode(&v2).unwrap().hint, delayed);
    }

    #[test]
    fn records_from_before_versions_or_retries_read_without_them_and_older_binaries_read_new_ones()
    {
        let mut record = InvocationRecord::for_test("S", Some("k"), Status::Runnable);
        record.caller = Some((InvocationId::random(0), 3));
        // What binaries before retries wrote: the same fields, without the retry's byte
        // (`None`) after them; before versions, without the version's byte either.
        let mut old = encode(&record);
        assert_eq!(old.pop(), Some(0));
        assert_eq!(decode::<InvocationRecord>(&old).unwrap(), record);
        assert_eq!(old.pop(), Some(0));
        assert_eq!(decode::<InvocationRecord>(&old).unwrap(), record);

        record.version = Some("1.4.0+9c1e07a2".into());
        let mut before_retries = encode(&record);
        before_retries.pop();
        assert_eq!(decode::<InvocationRecord>(&before_retries).unwrap(), record);
        record.retry = Some(Retry {
            failures: 3,
            next_at_ms: 1_700_000_000_000,
        });
        let before_interrupted = encode(&record);
        record.interrupted = Some(Interrupted {
            attempts: 2,
            journal_len: 7,
        });
        let new = encode(&record);
        assert_eq!(
            decode::<InvocationRecord>(&new[..before_interrupted.len() - 1]).unwrap(),
            InvocationRecord {
                interrupted: None,
                ..record.clone()
            }
        );
        assert_eq!(decode::<InvocationRecord>(&new).unwrap(), record);
        // An older binary decodes the fields it knows and ignores the ones after them.
        let older: RecordBeforeVersion = postcard::from_bytes(&new[1..]).unwrap();
        assert_eq!(older.seq, record.seq);
        assert_eq!(older.caller, record.caller);
        let with_retries: (RecordBeforeVersion, Option<String>, Option<Retry>) =
            postcard::from_bytes(&new[1..]).unwrap();
        assert_eq!(with_retries.2, record.retry);
    }
}

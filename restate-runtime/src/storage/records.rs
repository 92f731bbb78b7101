//! What the engine stores: invocation records and journal entries, with their versioned encoding.
//!
//! Every stored value is one format-version byte followed by postcard. Payloads stay opaque
//! bytes (the handler's JSON), never re-encoded.

use serde::{Deserialize, Serialize};

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
    Success(Vec<u8>),
    /// A terminal error.
    Failure { code: u16, message: String },
}

/// Where an invocation is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for its execution time (a delayed send).
    Scheduled { at_ms: u64 },
    /// Running or about to run (after a restart it resumes by replay).
    Runnable,
    /// Waiting (timer, call, awakeable, promise) with no task or memory held; resumed by replay
    /// when the wait completes or at `wake_at_ms`.
    Suspended { wake_at_ms: Option<u64> },
    /// Retries exhausted or non-determinism: waits for a resume from the admin API.
    Paused,
    /// Finished; `outcome` is the result.
    Completed {
        outcome: Outcome,
        completed_at_ms: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub target: Target,
    pub input: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub status: Status,
    /// Attempts made so far (the first execution is attempt 1).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at_ms: u64,
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
        }
    }
}

/// One journaled context operation, in the order the handler made them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalEntry {
    /// A `ctx.run` step and its result.
    Run { name: String, outcome: Outcome },
    /// A one-way message (or delayed message); the new invocation commits with this entry.
    Send {
        target: Target,
        invocation_id: InvocationId,
    },
    /// A request-response call; the callee's completion fills in `outcome`.
    Call {
        target: Target,
        invocation_id: InvocationId,
        outcome: Option<Outcome>,
    },
    /// A state read and the value it saw.
    GetState {
        name: String,
        value: Option<Vec<u8>>,
    },
    /// The state names a handler listed.
    StateKeys { keys: Vec<String> },
    /// A state write (the write itself commits with this entry).
    SetState { name: String, value: Vec<u8> },
    /// A state removal.
    ClearState { name: String },
    /// Removal of every state entry of the key.
    ClearAllState,
    /// A durable timer: wakes at this time, across restarts (unless cancelled while waiting).
    Sleep { wake_at_ms: u64, cancelled: bool },
    /// An awakeable; completed from outside (first completion wins).
    Awakeable { outcome: Option<Outcome> },
    /// This handler completed someone's awakeable.
    CompleteAwakeable { id: String },
    /// Waiting for a workflow's durable promise; filled in when it is completed.
    GetPromise {
        name: String,
        outcome: Option<Outcome>,
    },
    /// A look at a durable promise without waiting.
    PeekPromise {
        name: String,
        outcome: Option<Outcome>,
    },
    /// This handler completed a durable promise; `accepted` is false when it was already done.
    CompletePromise { name: String, accepted: bool },
    /// Which branch of a `ctx.select` won, so a replay takes the same one.
    Select { winner: u8 },
    /// Waiting for the result of an invocation this handler did not call (by its id).
    Attach {
        invocation_id: InvocationId,
        outcome: Option<Outcome>,
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
    let mut out = vec![RECORD_VERSION];
    // Encoding our own plain data types into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).expect("record encodes"));
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeRecordError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(DecodeRecordError::Version { found }),
        None => Err(DecodeRecordError::Version { found: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

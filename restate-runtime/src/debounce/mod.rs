//! Debounce: a burst of invocations of a handler for one key runs once, with the last input,
//! when the key has been quiet for a period (at the latest `max_wait` after the burst's first
//! arrival); the others complete superseded, with the outcome of the one that ran
//! (`#[handler(debounce(key = Self::invoice, period = "30s", max_wait = "5m"))]`). A key's
//! burst is one key of an internal object (`object.rs`), so it survives crashes and has one
//! writer; each arrival waits for its verdict on an awakeable of its own (`gate.rs`).

mod gate;
mod object;

pub(crate) use object::{DEBOUNCER, DebouncerObject, Open, stored};
use object::{Leave, Verdict};

use crate::client::RequestParts;
use crate::engine::Journal;
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Outcome};

/// How long a burst lasts, as a handler declares it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Window {
    /// The quiet time after the latest arrival that closes a burst.
    pub period_ms: u64,
    /// The longest a burst stays open after its first arrival (`None`: no bound).
    pub max_wait_ms: Option<u64>,
}

/// The message that lets a burst go of an invocation that ended before its verdict (cancelled
/// or killed while it waited), or chosen to run but before it said it started: for a journal
/// entry of invocation `id` that is an arrival in that state.
pub(crate) fn leave(
    id: InvocationId,
    seq: u64,
    journal: &Journal,
    index: u32,
    entry: &JournalEntry,
) -> Option<RequestParts> {
    let JournalEntry::Send { target, .. } = entry else {
        return None;
    };
    if target.service != DEBOUNCER || target.handler != "arrive" {
        return None;
    }
    // A verdict is a value; a cancellation that landed on the wait is an error.
    let verdict = match journal.get(index + 1) {
        Some(JournalEntry::Awakeable {
            outcome: Some(Outcome::Success(bytes)),
        }) => serde_json::from_slice::<Verdict>(bytes).ok(),
        _ => None,
    };
    let started = matches!(
        journal.get(index + 2),
        Some(JournalEntry::Send { target, .. }) if target.service == DEBOUNCER
    );
    let settled = match verdict {
        Some(Verdict::Superseded { .. }) => true,
        Some(Verdict::Run { .. }) => started,
        None => false,
    };
    if settled {
        return None;
    }
    let mut leave = crate::client::parts(
        DEBOUNCER,
        Some(target.key.as_deref()?),
        "leave",
        crate::codec::encode_json(&Leave {
            invocation: id,
            seq,
        }),
    );
    leave.idempotency_key = Some(format!("leave:{id}#{index}"));
    Some(leave)
}

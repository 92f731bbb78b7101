//! The gate of a debounced handler, before its body: the arrival (a send to the burst's key)
//! and an awakeable its verdict comes through, at two journal positions; at the third, the
//! chosen one says it starts (a send), and one that was not chosen waits for the outcome of
//! the one that ran (an attach).

use super::Window;
use super::object::{Arrival, Arrived, DEBOUNCER, Started, Verdict};
use crate::context::InvocationContext;
use crate::error::TerminalError;
use crate::storage::{JournalEntry, Outcome};

impl InvocationContext {
    /// Waits for this arrival's verdict in the burst of `name` (per `key`): `None` to run
    /// the handler, or the outcome of the one that ran in its place. Decided as every replay
    /// decides it: the journal's arrival at the next position if it has one (or only the
    /// awakeable, written first); a gate if the journal ends before it.
    pub(crate) async fn debounce(
        &self,
        name: &str,
        key: Option<&str>,
        window: Window,
    ) -> Result<Option<Outcome>, TerminalError> {
        let index = self.peek_index();
        let gated = match self.replayed(index) {
            Some(JournalEntry::Send { target, .. }) => target.service == DEBOUNCER,
            None => self.gate_is_fresh(index),
            _ => false,
        };
        if !gated || !self.take_index_if_next(index) {
            return Ok(None);
        }
        self.take_index();
        // The awakeable first: the verdict, sent once the arrival is durable, finds it.
        let (awakeable, verdict) = self.awakeable_at::<Verdict>(index + 1);
        let (seq, at_ms) = {
            let record = &self.inflight.state().record;
            (record.seq, record.created_at_ms)
        };
        let arrival = Arrival {
            name: name.to_owned(),
            arrived: Arrived {
                invocation: self.id(),
                seq,
                at_ms,
                awakeable,
            },
            window,
            // When it was accepted, not when this gate runs: one that a crash held back
            // still belongs to the burst it arrived in.
            now_ms: self.inflight.arrived_ms,
        };
        let bucket = crate::rate::bucket(name, key);
        let arrive = crate::client::parts(
            DEBOUNCER,
            Some(&bucket),
            "arrive",
            crate::codec::encode_json(&arrival),
        );
        self.send_at(index, arrive, None);
        let at = self.take_index();
        match verdict.await? {
            Verdict::Run { burst } => {
                let started = Started {
                    burst,
                    invocation: self.id(),
                };
                let started = crate::client::parts(
                    DEBOUNCER,
                    Some(&bucket),
                    "started",
                    crate::codec::encode_json(&started),
                );
                self.send_at(at, started, None);
                Ok(None)
            }
            Verdict::Superseded { by } => {
                // What the one that ran ended with (itself never superseded: it ran).
                let outcome = self.attach_at(at, by).await;
                // A cancellation that landed on the wait is this invocation's own end.
                if !self.inflight.state().record.cancel_delivered {
                    self.supersede(by);
                }
                Ok(Some(outcome.ran().clone()))
            }
        }
    }
}

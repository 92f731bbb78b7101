//! In-memory index of delayed starts; the durable truth is each invocation's `Scheduled` status,
//! which recovery re-arms.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::Engine;
use crate::clock::now_ms;
use crate::ids::InvocationId;

#[derive(Default)]
pub(crate) struct Timers {
    due: Mutex<BTreeSet<(u64, InvocationId)>>,
    changed: Notify,
}

impl Timers {
    pub(crate) fn schedule(&self, at_ms: u64, id: InvocationId) {
        self.due.lock().expect("timers lock").insert((at_ms, id));
        self.changed.notify_one();
    }

    /// Disarms the timers of a finished invocation at these times (its sleeps).
    pub(crate) fn disarm(&self, id: InvocationId, at_ms: impl IntoIterator<Item = u64>) {
        let mut due = self.due.lock().expect("timers lock");
        for at in at_ms {
            due.remove(&(at, id));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.due.lock().expect("timers lock").len()
    }

    fn pop_due(&self, now: u64) -> Result<Vec<InvocationId>, Option<u64>> {
        let mut due = self.due.lock().expect("timers lock");
        let mut fired = Vec::new();
        while let Some(&(at, id)) = due.first() {
            if at > now {
                break;
            }
            due.pop_first();
            fired.push(id);
        }
        if fired.is_empty() {
            Err(due.first().map(|(at, _)| *at))
        } else {
            Ok(fired)
        }
    }
}

pub(crate) async fn run(engine: Engine) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        let wait = match engine.timers.pop_due(now_ms()) {
            Ok(ids) => {
                for id in ids {
                    engine.fire(id);
                }
                continue;
            }
            Err(Some(next)) => Duration::from_millis(next.saturating_sub(now_ms())),
            Err(None) => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = engine.timers.changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

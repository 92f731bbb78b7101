//! Suspension: an invocation waiting for long leaves memory (record durable as `Suspended`),
//! and comes back by replay when a timer fires or one of its journal entries is completed from
//! outside (a call's result, an awakeable, a promise).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Engine, Finish, Inflight};
use crate::clock::now_ms;
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Status, WriteOp};

impl Engine {
    /// The finish channel of an invocation, created on first use.
    pub(crate) fn finisher(&self, id: InvocationId) -> watch::Sender<Finish> {
        self.finishers
            .lock()
            .expect("finishers")
            .entry(id)
            .or_insert_with(|| watch::channel(Finish::Pending).0)
            .clone()
    }

    /// Forgets a finish channel nobody listens on and no invocation in memory holds.
    pub(crate) fn drop_finisher_if_idle(&self, id: &InvocationId) {
        let mut finishers = self.finishers.lock().expect("finishers");
        if finishers
            .get(id)
            .is_some_and(|f| f.receiver_count() == 0 && f.sender_count() == 1)
        {
            finishers.remove(id);
        }
    }

    /// Suspends a waiting invocation unless something completed since the wait looked
    /// (`seen_version`). Returns false when the attempt should simply run again.
    pub(crate) async fn suspend(&self, inflight: &Arc<Inflight>, seen_version: u64) -> bool {
        let waiter = {
            let mut map = self.inflight.lock().expect("inflight map");
            if inflight.version() != seen_version {
                return false;
            }
            let mut state = inflight.state();
            let now = now_ms();
            let wake_at_ms = state
                .journal
                .values()
                .filter_map(|e| match e {
                    JournalEntry::Sleep {
                        wake_at_ms,
                        cancelled: false,
                    } if *wake_at_ms > now => Some(*wake_at_ms),
                    _ => None,
                })
                .min();
            state.record.status = Status::Suspended { wake_at_ms };
            state.record.modified_at_ms = now;
            state.persisted = true;
            let waiter = self
                .storage
                .submit(vec![WriteOp::put_invocation(inflight.id, &state.record)]);
            map.remove(&inflight.id);
            // Nobody waits on it now: a suspended invocation keeps no channel (an attacher
            // creates one).
            let mut finishers = self.finishers.lock().expect("finishers");
            if finishers
                .get(&inflight.id)
                .is_some_and(|f| f.receiver_count() == 0)
            {
                finishers.remove(&inflight.id);
            }
            drop(finishers);
            if let Some(at) = wake_at_ms {
                self.timers.schedule(at, inflight.id);
            }
            waiter
        };
        tracing::debug!(invocation = %inflight.id, "suspended");
        self.metrics.suspensions.inc();
        if let Err(e) = waiter.await {
            self.lose(inflight, e.to_string());
        }
        true
    }

    /// Completes journal entry `index` of invocation `id` from outside. In memory it wakes the
    /// waiting handler; a suspended invocation is resumed. `persisted` says whether the entry is
    /// already submitted to storage (a callee's completion writes it with its own result).
    pub(crate) async fn deliver(
        &self,
        id: InvocationId,
        index: u32,
        entry: JournalEntry,
        persisted: bool,
    ) {
        let in_memory = {
            let map = self.inflight.lock().expect("inflight map");
            map.get(&id).map(|f| {
                let waiter = (!persisted).then(|| {
                    let mut state = f.state();
                    let ops = vec![WriteOp::put_journal(id, index, &entry)];
                    f.submit_with_record(self.storage.as_ref(), &mut state, ops)
                });
                f.complete_entry(index, entry.clone());
                waiter
            })
        };
        if let Some(waiter) = in_memory {
            // Whoever completed the entry (an HTTP resolve, say) hears back only once it is
            // durable.
            if let Some(Err(e)) = futures::future::OptionFuture::from(waiter).await {
                tracing::error!(invocation = %id, error = %e, "cannot record completion");
            }
            return;
        }
        if !persisted
            && let Err(e) = self
                .storage
                .submit(vec![WriteOp::put_journal(id, index, &entry)])
                .await
        {
            tracing::error!(invocation = %id, error = %e, "cannot record completion");
            return;
        }
        // Resumed meanwhile (its journal may predate the write above): complete it in memory.
        if let Some(f) = self.inflight(&id) {
            f.complete_entry(index, entry);
            return;
        }
        self.resume(id).await;
    }

    /// Brings a suspended invocation back into memory and runs it by replay.
    pub(crate) async fn resume(&self, id: InvocationId) {
        let inflight = {
            let mut map = self.inflight.lock().expect("inflight map");
            if map.contains_key(&id) {
                return;
            }
            let loaded = self.storage.invocation(&id).and_then(|record| {
                let journal: super::Journal = self.storage.journal(&id)?.into_iter().collect();
                Ok(record.map(|r| (r, journal)))
            });
            let (mut record, journal) = match loaded {
                Ok(Some((r, j))) if matches!(r.status, Status::Suspended { .. }) => (r, j),
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(invocation = %id, error = %e, "cannot resume");
                    return;
                }
            };
            record.status = Status::Runnable;
            let inflight = self.new_inflight(id, record, true, journal);
            map.insert(id, inflight.clone());
            inflight
        };
        tracing::debug!(invocation = %id, "resumed");
        self.spawn_resumed(inflight);
    }

    /// Runs a resumed invocation: it still holds its key's lane, if it has one.
    pub(crate) fn spawn_resumed(&self, inflight: Arc<Inflight>) {
        let holds_lane = inflight.lane().is_some_and(|scope| {
            self.lanes
                .lock()
                .expect("lanes")
                .get(scope)
                .is_some_and(|lane| lane.running == Some(inflight.id))
        });
        if holds_lane {
            tokio::spawn(super::execute::run(self.clone(), inflight));
        } else {
            self.spawn(inflight);
        }
    }
}

/// Serialises awakeable completions, so the first one wins even when two race.
static AWAKEABLE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// Completes an awakeable if it is still open. `Ok(false)` when its invocation is unknown.
    pub(crate) async fn complete_awakeable(
        &self,
        id: crate::ids::AwakeableId,
        outcome: crate::storage::Outcome,
    ) -> Result<bool, super::EngineError> {
        let _serial = AWAKEABLE_LOCK.lock().await;
        let (invocation, index) = (id.invocation(), id.index());
        let current = match self.inflight(&invocation) {
            Some(f) => f.state().journal.get(index).cloned(),
            None => {
                if self.storage.invocation(&invocation)?.is_none() {
                    return Ok(false);
                }
                self.storage
                    .journal(&invocation)?
                    .into_iter()
                    .find_map(|(i, e)| (i == index).then_some(e))
            }
        };
        if let Some(JournalEntry::Awakeable { outcome: None }) = current {
            let entry = JournalEntry::Awakeable {
                outcome: Some(outcome),
            };
            self.deliver(invocation, index, entry, false).await;
        }
        Ok(true)
    }
}

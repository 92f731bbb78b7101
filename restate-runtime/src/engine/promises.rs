//! Durable promises of workflows: completed once (first completion wins), kept with the
//! workflow's state, and delivered to every handler waiting on them, suspended ones included:
//! waiters are recorded with their journal entry, so a restart does not lose them.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Engine, EngineError};
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Outcome, StateScope, WriteOp, records};

/// A promise: its workflow key and name.
type PromiseKey = (StateScope, String);

/// Handlers waiting on a promise: invocation and entry index.
#[derive(Default)]
pub(crate) struct PromiseWaiters(Mutex<HashMap<PromiseKey, Vec<(InvocationId, u32)>>>);

/// Serialises completions so the first one wins even when two race.
static COMPLETE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// The promise's outcome if completed; otherwise registers `(waiter, index)` to be told.
    /// Checking and registering happen under one lock that completion also takes, so a
    /// completion cannot slip between them.
    pub(crate) fn promise_or_wait(
        &self,
        scope: &StateScope,
        name: &str,
        waiter: Option<(InvocationId, u32)>,
    ) -> Result<Option<Outcome>, EngineError> {
        let mut waiters = self.promise_waiters.0.lock().expect("promise waiters");
        if let Some(outcome) = self.storage.promise(scope, name)? {
            return Ok(Some(outcome));
        }
        if let Some(w) = waiter {
            let list = waiters.entry((scope.clone(), name.to_owned())).or_default();
            if !list.contains(&w) {
                list.push(w);
            }
        }
        Ok(None)
    }

    /// Completes a promise; `Ok(false)` if it was already completed (nothing changes).
    pub(crate) async fn complete_promise(
        &self,
        scope: StateScope,
        name: &str,
        outcome: Outcome,
    ) -> Result<bool, EngineError> {
        let _serial = COMPLETE_LOCK.lock().await;
        if self.storage.promise(&scope, name)?.is_some() {
            return Ok(false);
        }
        let op = WriteOp::PutPromise {
            scope: scope.clone(),
            name: name.to_owned(),
            encoded: records::encode(&outcome),
        };
        self.storage.submit(vec![op]).await?;
        // Waiters known in memory, and those recorded durably (a restart forgets the former).
        let mut waiting = self
            .promise_waiters
            .0
            .lock()
            .expect("promise waiters")
            .remove(&(scope.clone(), name.to_owned()))
            .unwrap_or_default();
        for w in self.storage.promise_waiters(&scope, name)? {
            if !waiting.contains(&w) {
                waiting.push(w);
            }
        }
        for (id, index) in waiting {
            let entry = JournalEntry::GetPromise {
                name: name.to_owned(),
                outcome: Some(outcome.clone()),
            };
            self.deliver(id, index, entry, false).await;
        }
        drop(self.storage.submit(vec![WriteOp::ClearPromiseWaiters {
            scope,
            name: name.to_owned(),
        }]));
        Ok(true)
    }
}

//! Durable promises of workflows: completed once (first completion wins), kept with the
//! workflow's state, and delivered to every handler waiting on them, suspended ones included.
//!
//! Waiters are recorded with their `GetPromise` entry. A completion commits, in one batch, the
//! promise, the completing handler's `CompletePromise` entry, every waiter's completed entry
//! with its wake-up, and the removal of the waiters: a crash keeps all of it or none.

use std::collections::HashMap;
use std::sync::Mutex;

use super::wake::Completion;
use super::{Engine, EngineError};
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Outcome, StateScope, WriteOp, records};

/// A promise: its workflow key and name.
type PromiseKey = (StateScope, String);

#[derive(Default)]
struct Registry {
    /// Handlers waiting on a promise: invocation and entry index.
    waiting: HashMap<PromiseKey, Vec<(InvocationId, u32)>>,
    /// Completions submitted but not yet durable: a waiter arriving now takes the outcome from
    /// here (its entry commits after the completion), not the store's older "not yet".
    completing: HashMap<PromiseKey, Outcome>,
}

/// Waiters and in-flight completions of promises, under one lock.
#[derive(Default)]
pub(crate) struct PromiseWaiters(Mutex<Registry>);

impl PromiseWaiters {
    /// Forgets the waiters and completions of the workflow keys `gone` picks (their partition
    /// left this process).
    pub(crate) fn forget(&self, gone: &dyn Fn(&StateScope) -> bool) {
        let mut registry = self.0.lock().expect("promise waiters");
        registry.waiting.retain(|(scope, _), _| !gone(scope));
        registry.completing.retain(|(scope, _), _| !gone(scope));
    }
}

/// Serialises completions so the first one wins even when two race.
static COMPLETE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Engine {
    /// Looks at a promise and hands what it found to `record` (which journals it), all under
    /// the lock completions take: with `waiter` set and the promise not completed, the waiter
    /// is registered, and no completion can slip between the look and the journal entry.
    pub(crate) fn promise_or_wait<R>(
        &self,
        scope: &StateScope,
        name: &str,
        waiter: Option<(InvocationId, u32)>,
        record: impl FnOnce(Option<Outcome>) -> R,
    ) -> Result<R, EngineError> {
        let mut registry = self.promise_waiters.0.lock().expect("promise waiters");
        let key = (scope.clone(), name.to_owned());
        let found = match registry.completing.get(&key) {
            Some(outcome) => Some(outcome.clone()),
            None => self.storage.promise(scope, name)?,
        };
        if let (None, Some(w)) = (&found, waiter) {
            let list = registry.waiting.entry(key).or_default();
            if !list.contains(&w) {
                list.push(w);
            }
        }
        Ok(record(found))
    }

    /// Completes a promise; `Ok(false)` if it was already completed (nothing changes).
    /// `resolver` is the completing handler's own entry, committed with the promise.
    pub(crate) async fn complete_promise(
        &self,
        scope: StateScope,
        name: &str,
        outcome: Outcome,
        resolver: Completion,
    ) -> Result<bool, EngineError> {
        let _serial = COMPLETE_LOCK.lock().await;
        let key = (scope.clone(), name.to_owned());
        let pending = {
            let mut registry = self.promise_waiters.0.lock().expect("promise waiters");
            if self.storage.promise(&scope, name)?.is_some() {
                return Ok(false);
            }
            // Waiters known in memory, and those recorded durably (a restart forgets the former).
            let mut waiting = registry.waiting.remove(&key).unwrap_or_default();
            for w in self.storage.promise_waiters(&scope, name)? {
                if !waiting.contains(&w) {
                    waiting.push(w);
                }
            }
            let mut completions = vec![resolver];
            completions.extend(waiting.into_iter().map(|(id, index)| Completion {
                id,
                index,
                entry: JournalEntry::GetPromise {
                    name: name.to_owned(),
                    outcome: Some(outcome.clone()),
                },
                wakes: true,
            }));
            let ops = vec![
                WriteOp::PutPromise {
                    scope: scope.clone(),
                    name: name.to_owned(),
                    encoded: records::encode(&outcome),
                },
                WriteOp::ClearPromiseWaiters {
                    scope: scope.clone(),
                    name: name.to_owned(),
                },
            ];
            registry.completing.insert(key.clone(), outcome);
            self.submit_completions(ops, completions)
        };
        let result = pending.finish().await;
        self.promise_waiters
            .0
            .lock()
            .expect("promise waiters")
            .completing
            .remove(&key);
        result?;
        Ok(true)
    }
}

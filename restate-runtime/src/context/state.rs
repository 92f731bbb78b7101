//! K/V state of an object or workflow key. Every operation is a journal entry:
//! reads record what they saw, so a replay sees what the first execution saw; writes commit with
//! their entry, in journal order, without the handler waiting for the commit.

use serde::{Serialize, de::DeserializeOwned};

use super::invocation::{Abort, InvocationContext};
use crate::codec::{decode_json, encode_json};
use crate::error::TerminalError;
use crate::storage::{JournalEntry, StateScope, WriteOp};

impl InvocationContext {
    /// The object or workflow key whose state and promises this invocation sees.
    pub(crate) fn scope(&self) -> &StateScope {
        &self.inflight.scope
    }

    /// Replays the entry at `index` if there is one: `Ok(Some(entry))` when it matches `expected`
    /// (checked by `matches`), `Err(())` after a mismatch (the attempt is stopped).
    pub(super) fn replay_as(
        &self,
        index: u32,
        actual: &str,
        matches: impl FnOnce(&JournalEntry) -> bool,
    ) -> Result<Option<JournalEntry>, ()> {
        match self.replayed(index) {
            None if self.replay_ends() => Err(()),
            None => Ok(None),
            Some(entry) if matches(&entry) => Ok(Some(entry)),
            Some(other) => {
                self.mismatch(index, &other, actual);
                Err(())
            }
        }
    }

    /// Exclusive invocations read through their key's lane (its writes may not be durable
    /// yet); shared ones read the latest committed state. A read from the store does not
    /// hold the thread while a backend over a network answers.
    async fn read_state(&self, name: &str) -> Result<Option<Vec<u8>>, TerminalError> {
        let scope = self.scope();
        if self.inflight.exclusive
            && let Some(v) = self.engine.lane_state(scope, name)
        {
            return Ok(v);
        }
        let read = self.engine.storage().state_async(scope, name);
        read.await.map_err(|e| {
            self.stop(Abort::Retry(format!("state read failed: {e}")));
            TerminalError::new(e.to_string())
        })
    }

    pub(crate) async fn get_state<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, TerminalError> {
        let index = self.take_index();
        let value = match self.replay_as(
            index,
            &format!("get_state `{name}`"),
            |e| matches!(e, JournalEntry::GetState { name: n, .. } if n == name),
        ) {
            Ok(Some(JournalEntry::GetState { value, .. })) => value,
            Ok(_) => {
                let value = self.read_state(name).await?;
                let entry = JournalEntry::GetState {
                    name: name.to_owned(),
                    value: value.clone(),
                };
                drop(self.journal(index, entry, Vec::new()));
                value
            }
            Err(()) => return Err(TerminalError::new("journal mismatch")),
        };
        value
            .map(|bytes| decode_json(&bytes))
            .transpose()
            .map_err(|e| TerminalError::new(format!("state `{name}` does not decode: {e}")))
    }

    pub(crate) fn state_keys(&self) -> Result<Vec<String>, TerminalError> {
        let index = self.take_index();
        match self.replay_as(index, "state_keys", |e| {
            matches!(e, JournalEntry::StateKeys { .. })
        }) {
            Ok(Some(JournalEntry::StateKeys { keys })) => return Ok(keys),
            Ok(_) => {}
            Err(()) => return Err(TerminalError::new("journal mismatch")),
        }
        let scope = self.scope();
        let stored = self.engine.storage().state_keys(scope).map_err(|e| {
            self.stop(Abort::Retry(format!("state read failed: {e}")));
            TerminalError::new(e.to_string())
        })?;
        let keys = if self.inflight.exclusive {
            self.engine.lane_state_keys(scope, stored)
        } else {
            stored
        };
        drop(self.journal(
            index,
            JournalEntry::StateKeys { keys: keys.clone() },
            Vec::new(),
        ));
        Ok(keys)
    }

    /// Applies a write: journaled with its storage op in one batch, and seen at once by the
    /// key's exclusive invocations through its lane. On replay the write was submitted before,
    /// so only the lane's view is refreshed.
    fn write_state(&self, entry: JournalEntry, op: impl FnOnce(StateScope) -> WriteOp) {
        let index = self.take_index();
        let kind = entry.kind();
        let same = |e: &JournalEntry| match (e, &entry) {
            (JournalEntry::SetState { name: a, .. }, JournalEntry::SetState { name: b, .. })
            | (JournalEntry::ClearState { name: a }, JournalEntry::ClearState { name: b }) => {
                a == b
            }
            (JournalEntry::ClearAllState, JournalEntry::ClearAllState) => true,
            _ => false,
        };
        let replayed = match self.replay_as(index, kind, same) {
            Ok(found) => found.is_some(),
            Err(()) => return,
        };
        let (scope, writer) = (self.scope(), &self.inflight);
        match &entry {
            JournalEntry::SetState { name, value } => {
                self.engine
                    .lane_write(writer, Some(name), Some(value.clone()))
            }
            JournalEntry::ClearState { name } => self.engine.lane_write(writer, Some(name), None),
            _ => self.engine.lane_write(writer, None, None),
        }
        if !replayed {
            let op = op(scope.clone());
            drop(self.journal(index, entry, vec![op]));
        }
    }

    pub(crate) fn set_state<T: Serialize + 'static>(&self, name: &str, value: &T) {
        let value = match encode_json(value) {
            Ok(v) => v.to_vec(),
            Err(e) => {
                self.stop(Abort::Retry(format!("state `{name}`: {e}")));
                return;
            }
        };
        let entry = JournalEntry::SetState {
            name: name.to_owned(),
            value: value.clone(),
        };
        let name = name.to_owned();
        self.write_state(entry, |scope| WriteOp::SetState { scope, name, value });
    }

    pub(crate) fn clear_state(&self, name: &str) {
        let entry = JournalEntry::ClearState {
            name: name.to_owned(),
        };
        let name = name.to_owned();
        self.write_state(entry, |scope| WriteOp::ClearState { scope, name });
    }

    pub(crate) fn clear_all_state(&self) {
        self.write_state(JournalEntry::ClearAllState, |scope| {
            WriteOp::ClearAllState { scope }
        });
    }
}

//! Patch markers: which side of a code change an invocation takes, decided once and journaled,
//! so invocations started on the old code replay it and new ones run the new code.

use super::invocation::InvocationContext;
use crate::storage::JournalEntry;

impl InvocationContext {
    /// True when this invocation reaches `change` with the new code: it is past the end of
    /// what earlier attempts journaled (the marker is journaled now), or its journal has the
    /// marker here. False when its journal has something else here: it was written by code
    /// without the change. Decided once per change for the attempt, and the same way on
    /// every replay.
    pub(crate) fn patched(&self, change: &str) -> bool {
        if let Some(decided) = self.decided(change) {
            return decided;
        }
        let decided = loop {
            let index = self.peek_index();
            let state = self.inflight.state();
            let fresh = state.journal.last_index().is_none_or(|last| last < index);
            let marked = matches!(
                state.journal.get(index),
                Some(JournalEntry::Patch { change: c }) if c == change
            );
            drop(state);
            if !fresh && !marked {
                break false;
            }
            if fresh && self.replay_ends() {
                break true; // a replay check ends where the journal does
            }
            if !self.take_index_if_next(index) {
                continue; // another operation took the position first: look again
            }
            if fresh {
                // Not awaited: an entry after the marker commits after it, so a replay that
                // sees anything this branch did sees the marker too.
                let entry = JournalEntry::Patch {
                    change: change.to_owned(),
                };
                drop(self.journal(index, entry, Vec::new()));
            }
            break true;
        };
        self.patches
            .lock()
            .expect("patches lock")
            .push((change.to_owned(), decided));
        decided
    }

    /// The marker of a change whose old code is gone: consumed where a journal has it, nothing
    /// journaled where it does not.
    pub(crate) fn deprecate_patch(&self, change: &str) {
        let index = self.peek_index();
        let marked = matches!(
            self.inflight.state().journal.get(index),
            Some(JournalEntry::Patch { change: c }) if c == change
        );
        if marked {
            self.take_index_if_next(index);
        }
    }

    fn decided(&self, change: &str) -> Option<bool> {
        let patches = self.patches.lock().expect("patches lock");
        patches.iter().find(|(c, _)| c == change).map(|(_, d)| *d)
    }
}

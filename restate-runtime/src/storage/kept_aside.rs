//! What the groups acknowledged ahead of their apply wrote (they are kept aside until the
//! writer applies them, right after answering, or while a checkpoint holds redb): a read of
//! one record or one state value finds its latest write here, or learns that none of those
//! groups touched it and redb is current for it, instead of waiting for them to be applied.
//! Only a write whose result depends on what redb holds (a cancellation request, which changes
//! a stored record in place) makes a read of that record wait. A read of one invocation's
//! journal takes the journal writes kept aside over what redb held when they were looked up
//! (see [`KeptJournal`]). A read of one invocation's result waiters, or of one key's state
//! names or promises, waits only if a group kept aside wrote there. The writes are indexed by
//! key only once a read looks ([`KeptAside::latest`]), not as the writer takes a group in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::{StateScope, WriteOp};
use crate::ids::InvocationId;

/// One write among the groups kept aside: its group (shared with the writer, which applies
/// it later) and its place there. Nothing is copied when a group is taken in; a read copies
/// the bytes it finds.
#[derive(Clone)]
struct At(Arc<Vec<WriteOp>>, usize);

impl At {
    fn op(&self) -> &WriteOp {
        &self.0[self.1]
    }
}

/// The latest write of one invocation record among the groups kept aside.
enum Record {
    /// A `PutInvocation`.
    Put(At),
    Deleted,
    /// Changed in place from what redb holds: known only once applied.
    Changed,
}

/// What a read finds.
pub(super) enum Found {
    /// No group kept aside wrote it: redb is current for it.
    Store,
    /// The latest value written (`None`: removed).
    Written(Option<Vec<u8>>),
    /// It must wait for the groups to be applied.
    Wait,
}

/// One invocation's journal writes among the groups kept aside, to be taken over what redb
/// held when they were looked up: redb then holds every group applied before them, and maybe
/// some of them too, which taking them again does not change (each write sets an entry or
/// clears the journal).
#[derive(Default, Clone)]
pub(super) struct KeptJournal {
    /// A group deleted the invocation: what redb holds of its journal is gone (then a read
    /// need not look there at all).
    pub cleared: bool,
    /// Its entries' writes after that, in order (the last of an index wins). Shared with the
    /// groups: a read copies the bytes once the lock on them is let go.
    writes: Vec<At>,
}

impl KeptJournal {
    /// The journal as every acknowledged group leaves it, from what redb held (`stored`,
    /// index to encoded entry) when these writes were looked up.
    pub(super) fn over(self, mut stored: BTreeMap<u32, Vec<u8>>) -> BTreeMap<u32, Vec<u8>> {
        if self.cleared {
            stored.clear();
        }
        for at in self.writes {
            match at.op() {
                WriteOp::PutJournal { index, encoded, .. } => {
                    stored.insert(*index, encoded.clone())
                }
                _ => unreachable!("a journal entry's write is a PutJournal"),
            };
        }
        stored
    }
}

/// The groups kept aside, in order, and their writes by key, indexed only once a read looks:
/// most groups are applied microseconds after they are taken in, before any read looks, and
/// indexing every write of every group on the writer thread would cost more than the reads it
/// serves.
#[derive(Default)]
pub(super) struct KeptAside {
    groups: Vec<Arc<Vec<WriteOp>>>,
    /// How many of `groups` `latest` has taken in.
    indexed: usize,
    latest: LatestWrites,
}

impl KeptAside {
    /// Keeps one group aside (its writes are indexed when a read first looks).
    pub(super) fn add(&mut self, group: &Arc<Vec<WriteOp>>) {
        self.groups.push(group.clone());
    }

    /// Every group is applied.
    pub(super) fn clear(&mut self) {
        self.groups.clear();
        if self.indexed > 0 {
            self.indexed = 0;
            self.latest.clear();
        }
    }

    /// The latest write of each key among the groups kept aside, for a read to look up.
    pub(super) fn latest(&mut self) -> &LatestWrites {
        for group in &self.groups[self.indexed..] {
            self.latest.add(group);
        }
        self.indexed = self.groups.len();
        &self.latest
    }
}

/// The writes of the groups kept aside, latest first by key.
#[derive(Default)]
pub(super) struct LatestWrites {
    records: HashMap<InvocationId, Record>,
    journals: HashMap<InvocationId, KeptJournal>,
    /// The latest `SetState` of each name, `None` once cleared.
    state: HashMap<(StateScope, String), Option<At>>,
    /// Scopes whose whole state a group cleared: a name not written after reads as absent.
    cleared: HashSet<StateScope>,
    /// Invocations whose result waiters a group wrote.
    invocations: HashSet<InvocationId>,
    /// Keys whose state, promises or promise waiters a group wrote.
    scopes: HashSet<StateScope>,
}

impl LatestWrites {
    /// Takes in one group's writes, in order.
    fn add(&mut self, group: &Arc<Vec<WriteOp>>) {
        for (i, op) in group.iter().enumerate() {
            let at = || At(group.clone(), i);
            self.touch(op);
            match op {
                WriteOp::PutInvocation { id, .. } => {
                    self.records.insert(*id, Record::Put(at()));
                }
                WriteOp::DeleteInvocation { id } => {
                    self.records.insert(*id, Record::Deleted);
                    let journal = KeptJournal {
                        cleared: true,
                        writes: Vec::new(),
                    };
                    self.journals.insert(*id, journal);
                }
                WriteOp::PutJournal { id, .. } => {
                    self.journals.entry(*id).or_default().writes.push(at());
                }
                WriteOp::RequestCancel { id } => {
                    self.records.insert(*id, Record::Changed);
                }
                WriteOp::SetState { scope, name, .. } => {
                    self.state.insert((scope.clone(), name.clone()), Some(at()));
                }
                WriteOp::ClearState { scope, name } => {
                    self.state.insert((scope.clone(), name.clone()), None);
                }
                WriteOp::ClearAllState { scope } => {
                    self.state.retain(|(s, _), _| s != scope);
                    self.cleared.insert(scope.clone());
                }
                _ => {}
            }
        }
    }

    /// Notes the invocation or key whose result waiters, state or promises `op` writes.
    fn touch(&mut self, op: &WriteOp) {
        match op {
            WriteOp::AddResultWaiter { source: id, .. }
            | WriteOp::ClearResultWaiters { source: id } => {
                self.invocations.insert(*id);
            }
            WriteOp::SetState { scope, .. }
            | WriteOp::ClearState { scope, .. }
            | WriteOp::ClearAllState { scope }
            | WriteOp::PutPromise { scope, .. }
            | WriteOp::ClearPromises { scope }
            | WriteOp::AddPromiseWaiter { scope, .. }
            | WriteOp::ClearPromiseWaiters { scope, .. }
                if !self.scopes.contains(scope) =>
            {
                self.scopes.insert(scope.clone());
            }
            _ => {}
        }
    }

    /// Whether a group wrote `id`'s result waiters.
    pub(super) fn touches_result_waiters(&self, id: &InvocationId) -> bool {
        self.invocations.contains(id)
    }

    /// Whether a group wrote `scope`'s state, promises or promise waiters.
    pub(super) fn touches_scope(&self, scope: &StateScope) -> bool {
        self.scopes.contains(scope)
    }

    fn clear(&mut self) {
        self.records.clear();
        self.journals.clear();
        self.state.clear();
        self.cleared.clear();
        self.invocations.clear();
        self.scopes.clear();
    }

    pub(super) fn record(&self, id: &InvocationId) -> Found {
        match self.records.get(id) {
            None => Found::Store,
            Some(Record::Put(at)) => match at.op() {
                WriteOp::PutInvocation { encoded, .. } => Found::Written(Some(encoded.clone())),
                _ => unreachable!("a record's write is a PutInvocation"),
            },
            Some(Record::Deleted) => Found::Written(None),
            Some(Record::Changed) => Found::Wait,
        }
    }

    /// `id`'s journal writes, if a group kept aside made any.
    pub(super) fn journal(&self, id: &InvocationId) -> Option<KeptJournal> {
        self.journals.get(id).cloned()
    }

    pub(super) fn state(&self, scope: &StateScope, name: &str) -> Found {
        // A lookup by borrowed parts would need a second map shape; state reads during a
        // checkpoint are few enough for one key's copy.
        match self.state.get(&(scope.clone(), name.to_owned())) {
            Some(Some(at)) => match at.op() {
                WriteOp::SetState { value, .. } => Found::Written(Some(value.clone())),
                _ => unreachable!("a state value's write is a SetState"),
            },
            Some(None) => Found::Written(None),
            None if self.cleared.contains(scope) => Found::Written(None),
            None => Found::Store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(key: &str) -> StateScope {
        StateScope {
            service: "Counter".into(),
            key: key.into(),
        }
    }

    fn set(key: &str, name: &str, value: &[u8]) -> WriteOp {
        WriteOp::SetState {
            scope: scope(key),
            name: name.into(),
            value: value.to_vec(),
        }
    }

    fn written(found: Found) -> Option<Vec<u8>> {
        match found {
            Found::Written(value) => value,
            Found::Store => panic!("read from the store"),
            Found::Wait => panic!("waits"),
        }
    }

    #[test]
    fn the_latest_write_of_each_key_wins_and_others_read_the_store() {
        let mut kept = KeptAside::default();
        kept.add(&Arc::new(vec![set("a", "n", b"1"), set("a", "m", b"9")]));
        kept.add(&Arc::new(vec![
            set("a", "n", b"2"),
            WriteOp::ClearState {
                scope: scope("a"),
                name: "m".into(),
            },
        ]));
        assert_eq!(
            written(kept.latest().state(&scope("a"), "n")),
            Some(b"2".to_vec())
        );
        assert_eq!(written(kept.latest().state(&scope("a"), "m")), None);
        assert!(matches!(
            kept.latest().state(&scope("b"), "n"),
            Found::Store
        ));
        // Cleared as a whole, then one name written again.
        kept.add(&Arc::new(vec![
            WriteOp::ClearAllState { scope: scope("a") },
            set("a", "x", b"3"),
        ]));
        assert_eq!(written(kept.latest().state(&scope("a"), "n")), None);
        assert_eq!(
            written(kept.latest().state(&scope("a"), "x")),
            Some(b"3".to_vec())
        );
        kept.clear();
        assert!(matches!(
            kept.latest().state(&scope("a"), "n"),
            Found::Store
        ));
    }

    #[test]
    fn a_record_changed_in_place_waits_until_written_whole_again() {
        let (id, other) = (InvocationId::random(1), InvocationId::random(2));
        let mut kept = KeptAside::default();
        kept.add(&Arc::new(vec![WriteOp::RequestCancel { id }]));
        assert!(matches!(kept.latest().record(&id), Found::Wait));
        assert!(matches!(kept.latest().record(&other), Found::Store));
        kept.add(&Arc::new(vec![WriteOp::DeleteInvocation { id }]));
        assert_eq!(written(kept.latest().record(&id)), None);
    }

    /// redb may already hold some of the kept groups when a read looks them up (the writer
    /// commits them before it lets them go): laying them over again gives the same journal.
    #[test]
    fn a_journal_is_the_same_whether_redb_already_holds_some_kept_writes_or_none() {
        let id = InvocationId::random(5);
        let put = |index: u32, byte: u8| WriteOp::PutJournal {
            id,
            index,
            encoded: vec![byte],
        };
        let rows = |entries: &[(u32, u8)]| -> BTreeMap<u32, Vec<u8>> {
            entries.iter().map(|&(i, b)| (i, vec![b])).collect()
        };
        let mut kept = KeptAside::default();
        kept.add(&Arc::new(vec![put(1, 11), put(2, 2)]));
        kept.add(&Arc::new(vec![put(2, 22)]));
        let expected = rows(&[(0, 0), (1, 11), (2, 22)]);
        let before = rows(&[(0, 0), (1, 1)]);
        let first_applied = rows(&[(0, 0), (1, 11), (2, 2)]);
        let all_applied = rows(&[(0, 0), (1, 11), (2, 22)]);
        for stored in [before, first_applied, all_applied] {
            assert_eq!(
                kept.latest()
                    .journal(&id)
                    .expect("kept")
                    .over(stored.clone()),
                expected,
                "from {stored:?}"
            );
        }
        // A deletion among them: what came before it is gone, applied or not.
        kept.add(&Arc::new(vec![WriteOp::DeleteInvocation { id }, put(7, 7)]));
        for stored in [rows(&[(0, 0), (1, 1)]), rows(&[(7, 7)])] {
            assert_eq!(
                kept.latest()
                    .journal(&id)
                    .expect("kept")
                    .over(stored.clone()),
                rows(&[(7, 7)]),
                "from {stored:?}"
            );
        }
    }

    #[test]
    fn reads_of_waiters_and_keys_wait_only_where_a_group_wrote_and_journals_never() {
        let (journaled, waited_on, other) = (
            InvocationId::random(1),
            InvocationId::random(2),
            InvocationId::random(3),
        );
        let mut kept = KeptAside::default();
        kept.add(&Arc::new(vec![
            WriteOp::PutJournal {
                id: journaled,
                index: 0,
                encoded: Vec::new(),
            },
            WriteOp::ClearResultWaiters { source: waited_on },
            set("a", "n", b"1"),
            WriteOp::ClearPromises { scope: scope("w") },
        ]));
        assert!(kept.latest().touches_result_waiters(&waited_on));
        assert!(!kept.latest().touches_result_waiters(&journaled));
        assert!(!kept.latest().touches_result_waiters(&other));
        let journal = kept
            .latest()
            .journal(&journaled)
            .expect("its entry is kept");
        assert!(!journal.cleared);
        assert_eq!(
            journal.over(BTreeMap::new()),
            BTreeMap::from([(0, Vec::new())])
        );
        assert!(kept.latest().journal(&other).is_none());
        assert!(kept.latest().touches_scope(&scope("a")));
        assert!(kept.latest().touches_scope(&scope("w")));
        assert!(!kept.latest().touches_scope(&scope("b")));
        kept.clear();
        assert!(kept.latest().journal(&journaled).is_none());
        assert!(!kept.latest().touches_scope(&scope("a")));
    }
}

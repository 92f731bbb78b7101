//! The in-memory backend: every table a `BTreeMap`, every batch applied at once under one
//! lock. The test runtime's store, and the second backend that keeps [`Storage`] honest.
//!
//! A [`MemoryStore`] outlives the [`MemoryStorage`] handles opened on it, as a disk outlives a
//! process: [`MemoryStore::kill`] ends the handles opened before it (their writes fail from
//! then on, as a killed process's never land) and keeps every batch already applied, which is
//! what a SIGKILL keeps of a store whose commits are durable before they are answered.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};

use super::kills::Kills;
use super::placement::{self, Placement};
use super::records::{self, InvocationRecord, JournalEntry, Outcome, Status, Target};
use super::{
    CommitWaiter, ForwardWaiter, Forwarded, HintHead, Inbound, InboxMessage, InboxPending,
    Partitions, ResultWaiter, Signals, StateScope, Storage, StorageError, UnfinishedHint, WriteOp,
    WriterStats, hint_due,
};
use crate::ids::InvocationId;

type Key = [u8; 24];
/// (service or workflow, key, name).
type Named = (String, String, String);

/// The tables, shared by every handle opened on the store.
#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    tables: Tables,
    /// Kills: handles of an earlier one are dead.
    kills: Kills,
    /// Drawn when the store is first opened.
    secret: Option<[u8; 32]>,
    partitions: u32,
    /// Signals between the processes sharing the store, once one opened it as shared.
    signals: Option<(Signals, watch::Sender<u64>)>,
}

/// A message in the inbox of its invocation's partition.
struct InboxRow {
    id: InvocationId,
    /// It starts its invocation, accepted from outside: unique per id.
    starts: bool,
    message: Vec<u8>,
}

#[derive(Default)]
struct Tables {
    invocations: BTreeMap<Key, Vec<u8>>,
    journal: BTreeMap<(Key, u32), Vec<u8>>,
    unfinished: BTreeMap<Key, Vec<u8>>,
    /// (expiry ms, invocation) of finished invocations.
    expiry: BTreeSet<(u64, Key)>,
    /// (due ms, invocation) of unfinished ones with a timer.
    due: BTreeSet<(u64, Key)>,
    state: BTreeMap<Named, Vec<u8>>,
    promises: BTreeMap<Named, Vec<u8>>,
    promise_waiters: BTreeSet<(Named, Key, u32)>,
    wakeups: BTreeSet<(Key, u32)>,
    /// (source, waiter, entry) → the entry is a call.
    result_waiters: BTreeMap<(Key, Key, u32), bool>,
    /// Messages by arrival, for the owners of their partitions.
    inbox: BTreeMap<u64, InboxRow>,
    inbox_seq: u64,
}

impl MemoryStore {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Batches are checked before they change anything: a panic cannot leave half of one.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle on the store, as a process opens it; `partitions` counts only the first time.
    pub(crate) fn open(&self, partitions: u32) -> MemoryStorage {
        self.open_handle(partitions, false)
    }

    /// A handle on the store as one of several processes opens a shared database: with an
    /// inbox and signals, so that its engine forwards what belongs to partitions it does not
    /// hold ([`MemoryStorage::set_owned`]) and applies what arrives for those it does.
    #[cfg(test)]
    pub(crate) fn open_shared(&self, partitions: u32) -> MemoryStorage {
        self.open_handle(partitions, true)
    }

    fn open_handle(&self, partitions: u32, shared_store: bool) -> MemoryStorage {
        let mut shared = self.shared();
        let secret = *shared.secret.get_or_insert_with(rand::random);
        if shared.partitions == 0 {
            shared.partitions = partitions.max(1);
        }
        let signals = shared_store.then(|| {
            shared
                .signals
                .get_or_insert_with(Signals::channels)
                .0
                .clone()
        });
        MemoryStorage {
            signals,
            store: self.clone(),
            epoch: shared.kills.epoch(),
            secret,
            partitions: shared.partitions,
            failure: Arc::new(watch::channel(None).0),
            stats: Mutex::default(),
            closed: AtomicBool::new(false),
            owned: watch::channel(Partitions::all(shared.partitions)).0,
            writable: Mutex::new(Partitions::all(shared.partitions)),
            #[cfg(test)]
            left: Mutex::default(),
            #[cfg(test)]
            before_inbox_check: Mutex::default(),
        }
    }

    /// How many kills there have been: a handle opened at another count is dead.
    pub(crate) fn kills(&self) -> u64 {
        self.shared().kills.epoch()
    }

    /// A process kill: the handles opened before it are dead; everything applied stays. A
    /// pending [`MemoryStore::kill_after_commits`] is disarmed (it was for the dead process).
    pub(crate) fn kill(&self) {
        self.shared().kills.kill();
    }

    /// A [`MemoryStore::kill`] right after the `n`-th commit from now (1: the next).
    pub(crate) fn kill_after_commits(&self, n: u64) {
        self.shared().kills.arm(n);
    }
}

/// One process's handle on a [`MemoryStore`].
pub(crate) struct MemoryStorage {
    store: MemoryStore,
    /// Opened as one of several processes: what they signal each other.
    signals: Option<Signals>,
    epoch: u64,
    secret: [u8; 32],
    partitions: u32,
    failure: Arc<watch::Sender<Option<String>>>,
    stats: Mutex<WriterStats>,
    /// Closed: writes are refused, as a closed redb store's are.
    closed: AtomicBool,
    /// The partitions its process runs: all of them, unless a test hands out fewer.
    owned: watch::Sender<Partitions>,
    /// The partitions it may write (its leases): what it runs, and those it was told it lost
    /// until they are fenced.
    writable: Mutex<Partitions>,
    /// The sets its engine said it acted on ([`Storage::left`]), in order (for tests, which
    /// check when a shared store would release a lease).
    #[cfg(test)]
    left: Mutex<Vec<Partitions>>,
    /// Runs at the start of the next inbox check (of an id of this partition key, if one is
    /// given), for tests of what commits between two reads of a waiter.
    #[cfg(test)]
    before_inbox_check: Mutex<Option<InboxCheckHook>>,
}

/// A test's step run before an inbox check, and the partition key it waits for.
#[cfg(test)]
type InboxCheckHook = (Option<u64>, Box<dyn FnOnce() + Send>);

impl MemoryStorage {
    /// The first partition of these partition `keys` that this handle's process may not write.
    fn foreign_partition(
        writable: &Partitions,
        mut keys: impl Iterator<Item = u64>,
    ) -> Option<u32> {
        keys.find(|key| !writable.holds_key(*key))
            .and_then(|key| writable.partition_of(key))
    }

    /// Tells the engine on this handle that its process runs `owned` from now on, as a shared
    /// store does when leases move: those it gains are writable at once, those it loses stay
    /// writable until [`MemoryStorage::fence`] (a process lets a partition go before its
    /// lease does).
    #[cfg(test)]
    pub(crate) fn set_owned(&self, owned: Partitions) {
        {
            let mut writable = self.writable.lock().expect("writable lock");
            *writable = writable.with(&owned);
        }
        self.owned.send_replace(owned);
    }

    /// How many times its engine said it acted on a set ([`Storage::left`]), and whether it did
    /// on `set` after the first `since` of them: only then may a shared store let another
    /// process take what `set` lacks.
    #[cfg(test)]
    pub(crate) fn left_on(&self, set: &Partitions, since: usize) -> (usize, bool) {
        let left = self.left.lock().expect("left lock");
        let seen = left
            .get(since..)
            .unwrap_or_default()
            .iter()
            .any(|o| o == set);
        (left.len(), seen)
    }

    /// Runs `step` at the start of the next inbox check, as if another task committed it just
    /// then.
    #[cfg(test)]
    pub(crate) fn before_next_inbox_check(&self, step: impl FnOnce() + Send + 'static) {
        *self.before_inbox_check.lock().expect("hook lock") = Some((None, Box::new(step)));
    }

    /// [`Self::before_next_inbox_check`] of an id of `partition_key` only.
    #[cfg(test)]
    pub(crate) fn before_next_inbox_check_of(
        &self,
        partition_key: u64,
        step: impl FnOnce() + Send + 'static,
    ) {
        let hook = (
            Some(partition_key),
            Box::new(step) as Box<dyn FnOnce() + Send>,
        );
        *self.before_inbox_check.lock().expect("hook lock") = Some(hook);
    }

    /// The partitions this process was told it lost are no longer writable: a write to one
    /// is refused, as a shared database's fence refuses it.
    #[cfg(test)]
    pub(crate) fn fence(&self) {
        // Read before the lock: a commit holds `writable` while it drops partitions from
        // `owned`, so holding `owned`'s guard while waiting for `writable` would deadlock.
        let owned = self.owned.borrow().clone();
        *self.writable.lock().expect("writable lock") = owned;
    }

    /// Another process takes `partitions` over while this one still runs them (it was paused
    /// past its leases): its writes to them are refused from now on, before its engine hears.
    #[cfg(test)]
    pub(crate) fn take_away(&self, partitions: &Partitions) {
        let mut writable = self.writable.lock().expect("writable lock");
        *writable = writable.without(partitions);
    }

    /// Commits a batch unless it writes, or is `fenced` on, a partition this process may not
    /// write (see [`Self::refused_as_foreign`]).
    fn submit_checked(&self, ops: Vec<WriteOp>, fenced: Option<u64>) -> CommitWaiter {
        self.commit_checked(ops, fenced).0
    }

    /// [`Self::submit_checked`], saying whether the batch committed.
    fn commit_checked(&self, ops: Vec<WriteOp>, fenced: Option<u64>) -> (CommitWaiter, bool) {
        let started = std::time::Instant::now();
        // Held through the commit, as a database's fence holds its rows: a partition taken
        // away meanwhile is taken before the write (refused) or after it.
        let mut writable = self.writable.lock().expect("writable lock");
        if self.failure.borrow().is_none()
            && let Some(refused) = self.refused_as_foreign(&mut writable, &ops, fenced)
        {
            let (done, rx) = oneshot::channel();
            let _ = done.send(Err(refused));
            return (CommitWaiter::new(rx), false);
        }
        let result = self.commit(&ops);
        drop(writable);
        match &result {
            Ok(()) => {
                let mut stats = self.stats.lock().expect("stats lock");
                stats.commits += 1;
                stats.commit_latency.observe(started.elapsed());
                stats.batches += 1;
                stats.bytes += ops.iter().map(WriteOp::size).sum::<usize>() as u64;
            }
            Err(e) => {
                self.failure.send_if_modified(|failure| {
                    failure.get_or_insert_with(|| format!("journal commit failed: {e}"));
                    true
                });
            }
        }
        let committed = result.is_ok();
        let (done, rx) = oneshot::channel();
        let _ = done.send(result);
        (CommitWaiter::new(rx), committed)
    }

    /// A batch writing a partition another process holds: refused, and, as a shared
    /// database's writer does, this process stops writing every partition the batch writes
    /// and drops them (the taken one, and the others, whose invocations may have had only
    /// this write in memory: whoever takes them next recovers them). Nothing else stops.
    fn refused_as_foreign(
        &self,
        writable: &mut Partitions,
        ops: &[WriteOp],
        fenced: Option<u64>,
    ) -> Option<StorageError> {
        let keys = ops.iter().filter_map(WriteOp::partition_key);
        let partition = Self::foreign_partition(writable, keys.clone().chain(fenced))?;
        // Those it writes leave this process's hands, not one it is only fenced on.
        let written = Partitions::of(
            self.partitions,
            keys.filter_map(|k| writable.partition_of(k)),
        );
        *writable = writable.without(&written);
        self.owned
            .send_modify(|owned| *owned = owned.without(&written));
        Some(StorageError::Backend(format!(
            "partition {partition} is another process's: the write is refused"
        )))
    }

    /// The tables, unless this handle's process was killed (then the store has failed, as a
    /// killed process's store has for everything it still runs).
    fn tables(&self) -> Result<MutexGuard<'_, Shared>, StorageError> {
        let shared = self.store.shared();
        if shared.kills.epoch() != self.epoch {
            const KILLED: &str = "the store's process was killed";
            self.failure.send_if_modified(|failure| {
                let first = failure.is_none();
                failure.get_or_insert_with(|| KILLED.into());
                first
            });
            return Err(StorageError::Backend(KILLED.into()));
        }
        Ok(shared)
    }

    fn commit(&self, ops: &[WriteOp]) -> Result<(), StorageError> {
        if let Some(reason) = self.failure.borrow().clone() {
            return Err(StorageError::Poisoned(reason));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(StorageError::Closed);
        }
        let mut shared = self.tables()?;
        // Everything an op decodes is checked first: a batch lands whole or not at all.
        shared.tables.check(ops)?;
        for op in ops {
            shared.tables.apply(op);
        }
        if let Some((signals, inbox)) = &shared.signals {
            if ops.iter().any(|op| matches!(op, WriteOp::Forward { .. })) {
                inbox.send_modify(|n| *n += 1);
            }
            signals
                .finished
                .finished(ops.iter().filter_map(|op| match op {
                    WriteOp::PutInvocation {
                        id,
                        expires_at_ms: Some(_),
                        ..
                    } => Some(*id),
                    _ => None,
                }));
        }
        if shared.kills.committed(self.epoch) {
            shared.kills.kill();
        }
        Ok(())
    }
}

impl Tables {
    /// Decodes what applying `ops` will decode: the new hints, and the stored records a
    /// cancel or a delete reads (a stored hint was checked when it was written).
    fn check(&self, ops: &[WriteOp]) -> Result<(), StorageError> {
        for op in ops {
            match op {
                WriteOp::PutInvocation {
                    unfinished: Some(hint),
                    ..
                } => {
                    hint_due(hint)?;
                }
                WriteOp::RequestCancel { id } | WriteOp::DeleteInvocation { id } => {
                    if let Some(bytes) = self.invocations.get(&id.storage_key()) {
                        records::decode::<InvocationRecord>(bytes)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies one op of a batch [`Tables::check`] accepted.
    fn apply(&mut self, op: &WriteOp) {
        match op {
            WriteOp::PutInvocation {
                id,
                encoded,
                expires_at_ms,
                unfinished: hint,
                stored_before,
            } => {
                let key = id.storage_key();
                let due = hint.as_deref().and_then(checked_due);
                let old_due = if hint.is_some() || (*stored_before && expires_at_ms.is_some()) {
                    let old = match hint {
                        Some(hint) => self.unfinished.insert(key, hint.clone()),
                        None => self.unfinished.remove(&key),
                    };
                    old.as_deref().and_then(checked_due)
                } else {
                    None
                };
                self.invocations.insert(key, encoded.clone());
                if let Some(at) = expires_at_ms {
                    if *stored_before {
                        self.clear_wakeups(key);
                    }
                    self.expiry.insert((*at, key));
                }
                if old_due != due {
                    self.move_due(key, old_due, due);
                }
            }
            WriteOp::PutJournal { id, index, encoded } => {
                self.journal
                    .insert((id.storage_key(), *index), encoded.clone());
            }
            WriteOp::SetState { scope, name, value } => {
                self.state.insert(named(scope, name), value.clone());
            }
            WriteOp::ClearState { scope, name } => {
                self.state.remove(&named(scope, name));
            }
            WriteOp::ClearAllState { scope } => remove_scope(&mut self.state, scope),
            WriteOp::PutPromise {
                scope,
                name,
                encoded,
            } => {
                self.promises.insert(named(scope, name), encoded.clone());
            }
            WriteOp::ClearPromises { scope } => {
                remove_scope(&mut self.promises, scope);
                let first = (named(scope, ""), [0; 24], 0);
                let waiting: Vec<_> = self
                    .promise_waiters
                    .range(first..)
                    .take_while(|((s, k, _), _, _)| in_scope(scope, s, k))
                    .cloned()
                    .collect();
                for waiter in waiting {
                    self.promise_waiters.remove(&waiter);
                }
            }
            WriteOp::AddPromiseWaiter {
                scope,
                name,
                id,
                index,
            } => {
                self.promise_waiters
                    .insert((named(scope, name), id.storage_key(), *index));
            }
            WriteOp::ClearPromiseWaiters { scope, name } => {
                let promise = named(scope, name);
                let waiting: Vec<_> = self
                    .promise_waiters
                    .range((promise.clone(), [0; 24], 0)..)
                    .take_while(|(p, _, _)| *p == promise)
                    .cloned()
                    .collect();
                for waiter in waiting {
                    self.promise_waiters.remove(&waiter);
                }
            }
            WriteOp::Wake { id, index } => {
                self.wakeups.insert((id.storage_key(), *index));
            }
            WriteOp::ClearWakes { id, indexes } => {
                for index in indexes {
                    self.wakeups.remove(&(id.storage_key(), *index));
                }
            }
            WriteOp::AddResultWaiter {
                source,
                waiter,
                index,
                call,
            } => {
                self.result_waiters
                    .insert((source.storage_key(), waiter.storage_key(), *index), *call);
            }
            WriteOp::ClearResultWaiters { source } => {
                let source = source.storage_key();
                let waiting: Vec<_> = self
                    .result_waiters
                    .range((source, [0; 24], 0)..=(source, [0xff; 24], u32::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for waiter in waiting {
                    self.result_waiters.remove(&waiter);
                }
            }
            WriteOp::InboxDone { seqs } => {
                for seq in seqs {
                    self.inbox.remove(seq);
                }
            }
            WriteOp::Forward { id, encoded } => {
                self.inbox_seq += 1;
                let row = InboxRow {
                    id: *id,
                    starts: false,
                    message: encoded.clone(),
                };
                self.inbox.insert(self.inbox_seq, row);
            }
            WriteOp::RequestCancel { id } => {
                let key = id.storage_key();
                if let Some(bytes) = self.invocations.get(&key) {
                    let mut record: InvocationRecord =
                        records::decode(bytes).expect("checked before the batch");
                    if !matches!(record.status, Status::Completed { .. }) {
                        record.cancel_requested = true;
                        self.invocations.insert(key, records::encode(&record));
                    }
                }
            }
            WriteOp::DeleteInvocation { id } => {
                let key = id.storage_key();
                if let Some(old) = self.invocations.remove(&key) {
                    let record: InvocationRecord =
                        records::decode(&old).expect("checked before the batch");
                    if let Status::Completed { expires_at_ms, .. } = record.status {
                        self.expiry.remove(&(expires_at_ms, key));
                    }
                    self.move_due(key, records::due_at(&record.status), None);
                }
                self.unfinished.remove(&key);
                self.clear_wakeups(key);
                let entries: Vec<_> = self
                    .journal
                    .range((key, 0)..=(key, u32::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for entry in entries {
                    self.journal.remove(&entry);
                }
            }
        }
    }

    fn clear_wakeups(&mut self, key: Key) {
        let wakes: Vec<_> = self
            .wakeups
            .range((key, 0)..=(key, u32::MAX))
            .copied()
            .collect();
        for wake in wakes {
            self.wakeups.remove(&wake);
        }
    }

    fn move_due(&mut self, key: Key, from: Option<u64>, to: Option<u64>) {
        if let Some(at) = from {
            self.due.remove(&(at, key));
        }
        if let Some(at) = to {
            self.due.insert((at, key));
        }
    }
}

/// [`hint_due`] of a hint [`Tables::check`] accepted.
fn checked_due(hint: &[u8]) -> Option<u64> {
    hint_due(hint).expect("checked before the batch")
}

/// Removes every entry of `scope` from a table keyed by (service, key, name).
fn remove_scope<V>(table: &mut BTreeMap<Named, V>, scope: &StateScope) {
    let names: Vec<_> = table
        .range(named(scope, "")..)
        .take_while(|((s, k, _), _)| in_scope(scope, s, k))
        .map(|(k, _)| k.clone())
        .collect();
    for name in names {
        table.remove(&name);
    }
}

fn named(scope: &StateScope, name: &str) -> Named {
    (scope.service.clone(), scope.key.clone(), name.to_owned())
}

fn in_scope(scope: &StateScope, service: &str, key: &str) -> bool {
    scope.service == service && scope.key == key
}

fn id_of(key: &Key) -> InvocationId {
    InvocationId::from_storage_key(key).expect("24-byte keys come from ids")
}

impl Storage for MemoryStorage {
    fn submit(&self, ops: Vec<WriteOp>) -> CommitWaiter {
        self.submit_checked(ops, None)
    }

    fn submit_fenced(&self, ops: Vec<WriteOp>, partition_key: u64) -> CommitWaiter {
        self.submit_checked(ops, Some(partition_key))
    }

    fn submit_placing(
        &self,
        mut ops: Vec<WriteOp>,
        fenced_on: Option<u64>,
        placements: Vec<Arc<Placement>>,
    ) -> CommitWaiter {
        if !placements.is_empty() {
            let waiting: Result<Vec<bool>, StorageError> = (placements.iter())
                .map(|p| Ok(self.inbox_pending(&p.id())?.partition))
                .collect();
            let decided = waiting.and_then(|w| placement::decide(&placements, &w, &mut ops));
            if let Err(e) = decided {
                for placement in placements {
                    placement.settle(false);
                }
                let (done, rx) = oneshot::channel();
                let _ = done.send(Err(e));
                return CommitWaiter::new(rx);
            }
        }
        let (committed, result) = self.commit_checked(ops, fenced_on);
        for placement in placements {
            placement.settle(result);
        }
        committed
    }

    fn invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>, StorageError> {
        let shared = self.tables()?;
        let stored = shared.tables.invocations.get(&id.storage_key());
        Ok(stored.map(|bytes| records::decode(bytes)).transpose()?)
    }

    fn journal(&self, id: &InvocationId) -> Result<Vec<(u32, JournalEntry)>, StorageError> {
        let shared = self.tables()?;
        let key = id.storage_key();
        shared
            .tables
            .journal
            .range((key, 0)..=(key, u32::MAX))
            .map(|((_, index), bytes)| Ok((*index, records::decode(bytes)?)))
            .collect()
    }

    fn state(&self, scope: &StateScope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tables()?
            .tables
            .state
            .get(&named(scope, name))
            .cloned())
    }

    fn state_keys(&self, scope: &StateScope) -> Result<Vec<String>, StorageError> {
        let shared = self.tables()?;
        let from = named(scope, "");
        Ok(shared
            .tables
            .state
            .range(from..)
            .take_while(|((s, k, _), _)| in_scope(scope, s, k))
            .map(|((_, _, name), _)| name.clone())
            .collect())
    }

    fn promise(&self, scope: &StateScope, name: &str) -> Result<Option<Outcome>, StorageError> {
        let shared = self.tables()?;
        let stored = shared.tables.promises.get(&named(scope, name));
        Ok(stored.map(|bytes| records::decode(bytes)).transpose()?)
    }

    fn invocations(
        &self,
        after: Option<InvocationId>,
        limit: usize,
    ) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError> {
        let shared = self.tables()?;
        let from = match after {
            Some(id) => Bound::Excluded(id.storage_key()),
            None => Bound::Unbounded,
        };
        shared
            .tables
            .invocations
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(key, bytes)| Ok((id_of(key), records::decode(bytes)?)))
            .collect()
    }

    fn promise_waiters(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Vec<(InvocationId, u32)>, StorageError> {
        let shared = self.tables()?;
        let promise = named(scope, name);
        Ok(shared
            .tables
            .promise_waiters
            .range((promise.clone(), [0; 24], 0)..)
            .take_while(|(p, _, _)| *p == promise)
            .map(|(_, id, index)| (id_of(id), *index))
            .collect())
    }

    fn unfinished(&self) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.unfinished_where(&mut |_, _| true)
    }

    fn unfinished_where(
        &self,
        keep: &mut dyn FnMut(InvocationId, Option<HintHead>) -> bool,
    ) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        // Copied out first: `keep` runs without the store's lock, as it would on redb.
        let all: Vec<(Key, Vec<u8>)> = {
            let shared = self.tables()?;
            let unfinished = &shared.tables.unfinished;
            unfinished.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        let mut out = Vec::new();
        for (key, bytes) in all {
            let id = id_of(&key);
            if keep(id, UnfinishedHint::encoded_head(&bytes)) {
                out.push((id, UnfinishedHint::decode(&bytes)?.hint));
            }
        }
        Ok(out)
    }

    fn due(
        &self,
        after: Option<(u64, InvocationId)>,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InvocationId)>, StorageError> {
        let shared = self.tables()?;
        let end = (until_ms, [0xff; 24]);
        let from = match after {
            // Past the end: nothing (a range that starts after it ends would panic).
            Some((at, id)) if (at, id.storage_key()) >= end => return Ok(Vec::new()),
            Some((at, id)) => Bound::Excluded((at, id.storage_key())),
            None => Bound::Unbounded,
        };
        Ok(shared
            .tables
            .due
            .range((from, Bound::Included(end)))
            .take(limit)
            .map(|(at, key)| (*at, id_of(key)))
            .collect())
    }

    fn due_len(&self) -> Result<u64, StorageError> {
        Ok(self.tables()?.tables.due.len() as u64)
    }

    fn result_waiters(
        &self,
        source: Option<&InvocationId>,
    ) -> Result<Vec<ResultWaiter>, StorageError> {
        let shared = self.tables()?;
        let waiters = &shared.tables.result_waiters;
        let (from, to) = match source {
            Some(id) => {
                let key = id.storage_key();
                ((key, [0; 24], 0), (key, [0xff; 24], u32::MAX))
            }
            None => (([0; 24], [0; 24], 0), ([0xff; 24], [0xff; 24], u32::MAX)),
        };
        let rows = waiters.range(from..=to);
        Ok(rows
            .map(|((source, waiter, index), call)| ResultWaiter {
                source: id_of(source),
                waiter: id_of(waiter),
                index: *index,
                call: *call,
            })
            .collect())
    }

    fn woken(&self) -> Result<Vec<InvocationId>, StorageError> {
        let shared = self.tables()?;
        let mut out: Vec<InvocationId> = Vec::new();
        for (key, _) in &shared.tables.wakeups {
            let id = id_of(key);
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(InvocationId, Option<Target>)>, StorageError> {
        let shared = self.tables()?;
        let owned = self.owned.borrow().clone();
        shared
            .tables
            .expiry
            .range(..=(now_ms, [0xff; 24]))
            .filter(|(_, key)| owned.holds(&id_of(key)))
            .take(limit)
            .map(|(_, key)| {
                let target = shared
                    .tables
                    .invocations
                    .get(key)
                    .map(|bytes| records::decode_target(bytes))
                    .transpose()?;
                Ok((id_of(key), target))
            })
            .collect()
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn owned(&self) -> watch::Receiver<Partitions> {
        self.owned.subscribe()
    }

    fn left(&self, observed: &Partitions) {
        #[cfg(test)]
        self.left.lock().expect("left lock").push(observed.clone());
        let _ = observed;
    }

    fn forward(&self, id: InvocationId, message: InboxMessage) -> ForwardWaiter {
        let forwarded = self.signals.as_ref().map_or_else(
            || {
                Err(StorageError::Backend(
                    "this store serves one process".into(),
                ))
            },
            |_| {
                let mut shared = self.tables()?;
                let tables = &mut shared.tables;
                let starts = message.starts_invocation();
                let key = id.storage_key();
                if starts
                    && (tables.invocations.contains_key(&key)
                        || tables.inbox.values().any(|row| row.starts && row.id == id))
                {
                    return Ok(Forwarded::Duplicate);
                }
                tables.inbox_seq += 1;
                let row = InboxRow {
                    id,
                    starts,
                    message: records::encode(&message),
                };
                tables.inbox.insert(tables.inbox_seq, row);
                if let Some((_, inbox)) = &shared.signals {
                    inbox.send_modify(|n| *n += 1);
                }
                Ok(Forwarded::New)
            },
        );
        Box::pin(std::future::ready(forwarded))
    }

    fn inbox(&self, limit: usize, max_bytes: usize) -> Result<Vec<Inbound>, StorageError> {
        let shared = self.tables()?;
        let owned = self.owned.borrow().clone();
        let mut bytes = 0;
        let mut page = Vec::new();
        for (seq, row) in &shared.tables.inbox {
            if page.len() >= limit || bytes >= max_bytes {
                break;
            }
            if !owned.holds(&row.id) {
                continue;
            }
            bytes += row.message.len();
            page.push(Inbound {
                seq: *seq,
                id: row.id,
                message: records::decode(&row.message)?,
            });
        }
        Ok(page)
    }

    fn inbox_pending(&self, id: &InvocationId) -> Result<InboxPending, StorageError> {
        #[cfg(test)]
        {
            let step = {
                let mut hook = self.before_inbox_check.lock().expect("hook lock");
                let ours = hook
                    .as_ref()
                    .is_some_and(|(key, _)| key.is_none_or(|k| k == id.partition_key()));
                hook.take_if(|_| ours)
            };
            if let Some((_, step)) = step {
                step();
            }
        }
        let shared = self.tables()?;
        let rows = shared.tables.inbox.values();
        Ok(
            rows.fold(InboxPending::default(), |pending, row| InboxPending {
                starts: pending.starts || row.id == *id,
                partition: pending.partition || row.id.partition_key() == id.partition_key(),
            }),
        )
    }

    fn signals(&self) -> Option<Signals> {
        self.signals.clone()
    }

    fn writer_stats(&self) -> WriterStats {
        *self.stats.lock().expect("stats lock")
    }

    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

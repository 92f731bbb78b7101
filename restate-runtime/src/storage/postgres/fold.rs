//! A group's operations folded into the fewest writes: per table, the ranges and rows it
//! deletes and the rows it finally holds, each kind one part of a statement over arrays
//! (`unnest`, see [`combined`](super::combined)). A group of fifty requests is then one
//! statement, not a hundred.
//!
//! Folding keeps the meaning of applying the operations one by one: a delete drops the rows
//! put before it in the group, and a put after a delete of its row replaces the delete (it
//! writes the whole row). A row put into a range deleted before it in the group splits the
//! statement in two, deletes first, so that the range's delete cannot reach it. Tables are
//! independent of each other, so their order does not matter; a cancel request, which reads a
//! stored record, is folded into a record put earlier in the group or, when there is none,
//! ends the fold (see `writer.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::super::records::{self, InvocationRecord, Status};
use super::super::{StateScope, StorageError, WriteOp, hint_due};
use super::combined::{Combined, Part};
use super::{Param, millis};
use crate::ids::InvocationId;

type Id = [u8; 24];
/// (service, key) of an object or workflow, as UTF-8 bytes.
type Scope = (Vec<u8>, Vec<u8>);
/// (service, key, name).
type Named = (Vec<u8>, Vec<u8>, Vec<u8>);

/// One table's share of a group: the ranges deleted, the rows deleted, and the rows put
/// after the last delete that covers them.
struct Folded<K, V, R> {
    ranges: Vec<R>,
    deletes: BTreeSet<K>,
    puts: BTreeMap<K, V>,
    /// A row was put into a range deleted before it: the deletes go first, in a statement of
    /// their own.
    put_into_range: bool,
}

impl<K: Ord + Clone, V, R> Default for Folded<K, V, R> {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            deletes: BTreeSet::new(),
            puts: BTreeMap::new(),
            put_into_range: false,
        }
    }
}

/// A range of a table's rows that one operation deletes.
trait Covers<K> {
    fn covers(&self, key: &K) -> bool;
}

impl<K: Ord + Clone, V, R: Covers<K>> Folded<K, V, R> {
    fn put(&mut self, key: K, value: V) {
        self.deletes.remove(&key);
        self.put_into_range |= self.ranges.iter().any(|range| range.covers(&key));
        self.puts.insert(key, value);
    }

    fn delete(&mut self, key: K) {
        self.puts.remove(&key);
        self.deletes.insert(key);
    }

    fn delete_range(&mut self, range: R) {
        self.puts.retain(|k, _| !range.covers(k));
        self.deletes.retain(|k| !range.covers(k));
        self.ranges.push(range);
    }
}

/// The invocations table has no ranges.
impl Covers<Id> for () {
    fn covers(&self, _: &Id) -> bool {
        false
    }
}

/// All of an invocation's journal entries or wake-ups.
impl Covers<(Id, u32)> for Id {
    fn covers(&self, (id, _): &(Id, u32)) -> bool {
        id == self
    }
}

/// All the result waiters of a source.
impl Covers<(Id, Id, u32)> for Id {
    fn covers(&self, (source, _, _): &(Id, Id, u32)) -> bool {
        source == self
    }
}

/// All the named values of an object or workflow.
impl Covers<Named> for Scope {
    fn covers(&self, named: &Named) -> bool {
        self.0 == named.0 && self.1 == named.1
    }
}

impl Covers<(Named, Id, u32)> for WaiterRange {
    fn covers(&self, (promise, _, _): &(Named, Id, u32)) -> bool {
        match self {
            WaiterRange::Scope(s) => s.covers(promise),
            WaiterRange::Promise(p) => p == promise,
        }
    }
}

/// An invocation row as `PutInvocation` writes it.
struct InvocationRow {
    partition_key: i64,
    record: Vec<u8>,
    hint: Option<Vec<u8>>,
    due_ms: Option<i64>,
    expires_at_ms: Option<i64>,
}

/// The promise waiters a delete covers.
enum WaiterRange {
    Scope(Scope),
    Promise(Named),
}

/// The folded writes of (part of) a group.
#[derive(Default)]
pub(super) struct Fold {
    invocations: Folded<Id, InvocationRow, ()>,
    journal: Folded<(Id, u32), Vec<u8>, Id>,
    state: Folded<Named, Vec<u8>, Scope>,
    promises: Folded<Named, Vec<u8>, Scope>,
    promise_waiters: Folded<(Named, Id, u32), (), WaiterRange>,
    wakes: Folded<(Id, u32), (), Id>,
    result_waiters: Folded<(Id, Id, u32), bool, Id>,
    /// The finished invocations it stores: other processes waiting on them are notified.
    finished: Vec<InvocationId>,
    /// Applied inbox messages, removed after everything else.
    inbox_done: Vec<i64>,
    /// Messages for the inboxes of other partitions, in the order their ops came.
    forwards: Vec<(InvocationId, Vec<u8>)>,
}

fn scope(s: &StateScope) -> Scope {
    (s.service.as_bytes().to_vec(), s.key.as_bytes().to_vec())
}

fn named(s: &StateScope, name: &str) -> Named {
    let (service, key) = scope(s);
    (service, key, name.as_bytes().to_vec())
}

impl Fold {
    /// Folds one operation in, except a cancel request for a record this fold does not hold:
    /// its invocation is returned, and the caller sends what is folded so far and applies it
    /// alone.
    pub(super) fn add(&mut self, op: WriteOp) -> Result<Option<InvocationId>, StorageError> {
        match op {
            WriteOp::PutInvocation {
                id,
                encoded,
                expires_at_ms,
                unfinished,
                stored_before,
            } => {
                let key = id.storage_key();
                let due = match &unfinished {
                    Some(hint) => hint_due(hint)?,
                    None => None,
                };
                if expires_at_ms.is_some() && stored_before {
                    self.wakes.delete_range(key);
                }
                if expires_at_ms.is_some() {
                    self.finished.push(id);
                }
                self.invocations.put(
                    key,
                    InvocationRow {
                        partition_key: id.partition_key() as i64,
                        record: encoded,
                        hint: unfinished,
                        due_ms: due.map(millis),
                        expires_at_ms: expires_at_ms.map(millis),
                    },
                );
            }
            WriteOp::PutJournal { id, index, encoded } => {
                self.journal.put((id.storage_key(), index), encoded);
            }
            WriteOp::DeleteInvocation { id } => {
                let key = id.storage_key();
                self.invocations.delete(key);
                self.journal.delete_range(key);
                self.wakes.delete_range(key);
            }
            WriteOp::SetState {
                scope: s,
                name,
                value,
            } => {
                self.state.put(named(&s, &name), value);
            }
            WriteOp::ClearState { scope: s, name } => self.state.delete(named(&s, &name)),
            WriteOp::ClearAllState { scope: s } => self.state.delete_range(scope(&s)),
            WriteOp::PutPromise {
                scope: s,
                name,
                encoded,
            } => self.promises.put(named(&s, &name), encoded),
            WriteOp::ClearPromises { scope: s } => {
                self.promises.delete_range(scope(&s));
                self.promise_waiters
                    .delete_range(WaiterRange::Scope(scope(&s)));
            }
            WriteOp::AddPromiseWaiter {
                scope: s,
                name,
                id,
                index,
            } => self
                .promise_waiters
                .put((named(&s, &name), id.storage_key(), index), ()),
            WriteOp::ClearPromiseWaiters { scope: s, name } => self
                .promise_waiters
                .delete_range(WaiterRange::Promise(named(&s, &name))),
            WriteOp::Wake { id, index } => self.wakes.put((id.storage_key(), index), ()),
            WriteOp::ClearWakes { id, indexes } => {
                for index in indexes {
                    self.wakes.delete((id.storage_key(), index));
                }
            }
            WriteOp::AddResultWaiter {
                source,
                waiter,
                index,
                call,
            } => self
                .result_waiters
                .put((source.storage_key(), waiter.storage_key(), index), call),
            WriteOp::ClearResultWaiters { source } => {
                self.result_waiters.delete_range(source.storage_key());
            }
            WriteOp::RequestCancel { id } => {
                return Ok((!self.cancel_folded(&id)?).then_some(id));
            }
            WriteOp::InboxDone { seqs } => {
                self.inbox_done.extend(seqs.into_iter().map(|s| s as i64));
            }
            WriteOp::Forward { id, encoded } => self.forwards.push((id, encoded)),
        }
        Ok(None)
    }

    /// A cancel request applied to the record this fold puts, if it puts one: whether it did.
    fn cancel_folded(&mut self, id: &InvocationId) -> Result<bool, StorageError> {
        let key = id.storage_key();
        let Some(row) = self.invocations.puts.get_mut(&key) else {
            return Ok(false);
        };
        let mut record: InvocationRecord = records::decode(&row.record)?;
        if !matches!(record.status, Status::Completed { .. }) {
            record.cancel_requested = true;
            row.record = records::encode(&record);
        }
        Ok(true)
    }

    /// The finished invocations it stores (taken: asked once).
    pub(super) fn take_finished(&mut self) -> Vec<InvocationId> {
        std::mem::take(&mut self.finished)
    }

    /// The statements: the parts of `first` (the fence, for one) and the fold's, in one
    /// statement, or in two when a row is put into a range deleted before it (the deletes
    /// first, with `first`'s parts). Empty statements are left out.
    pub(super) fn statements(self, mut first: Combined) -> Vec<Combined> {
        let split = self.invocations.put_into_range
            || self.journal.put_into_range
            || self.state.put_into_range
            || self.promises.put_into_range
            || self.promise_waiters.put_into_range
            || self.wakes.put_into_range
            || self.result_waiters.put_into_range;
        let mut parts: Vec<(Part, Vec<Param>)> = Vec::new();
        let mut push = |part: Part, params: Vec<Param>| parts.push((part, params));

        let inv = self.invocations;
        if !inv.deletes.is_empty() {
            push(Part::DeleteInvocations, vec![ids(inv.deletes.iter())]);
        }
        if !inv.puts.is_empty() {
            let n = inv.puts.len();
            let (mut keys, mut partition_keys, mut records) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut hints, mut dues, mut expiries) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (key, row) in inv.puts {
                keys.push(key.to_vec());
                partition_keys.push(row.partition_key);
                records.push(row.record);
                hints.push(row.hint);
                dues.push(row.due_ms);
                expiries.push(row.expires_at_ms);
            }
            push(
                Part::PutInvocations,
                vec![
                    Box::new(keys),
                    Box::new(partition_keys),
                    Box::new(records),
                    Box::new(hints),
                    Box::new(dues),
                    Box::new(expiries),
                ],
            );
        }

        let journal = self.journal;
        if !journal.ranges.is_empty() {
            push(Part::DeleteJournals, vec![ids(journal.ranges.iter())]);
        }
        if !journal.puts.is_empty() {
            let rows: Vec<_> = journal.puts.into_iter().collect();
            push(
                Part::PutJournal,
                vec![
                    ids(rows.iter().map(|((k, _), _)| k)),
                    indexes(rows.iter().map(|((_, i), _)| i)),
                    Box::new(rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()),
                ],
            );
        }

        let named_tables = [
            (
                [
                    Part::DeleteStateScopes,
                    Part::DeleteStateRows,
                    Part::PutState,
                ],
                self.state,
            ),
            (
                [
                    Part::DeletePromiseScopes,
                    Part::DeletePromiseRows,
                    Part::PutPromises,
                ],
                self.promises,
            ),
        ];
        for ([delete_scopes, delete_rows, put], folded) in named_tables {
            if !folded.ranges.is_empty() {
                push(delete_scopes, scopes(folded.ranges));
            }
            if !folded.deletes.is_empty() {
                push(delete_rows, names(folded.deletes.into_iter()));
            }
            if !folded.puts.is_empty() {
                let (keys, values): (Vec<_>, Vec<_>) = folded.puts.into_iter().unzip();
                let mut params = names(keys.into_iter());
                params.push(Box::new(values));
                push(put, params);
            }
        }

        let waiters = self.promise_waiters;
        let (mut whole, mut promises) = (Vec::new(), Vec::new());
        for range in waiters.ranges {
            match range {
                WaiterRange::Scope(s) => whole.push(s),
                WaiterRange::Promise(p) => promises.push(p),
            }
        }
        if !whole.is_empty() {
            push(Part::DeleteScopePromiseWaiters, scopes(whole));
        }
        if !promises.is_empty() {
            push(Part::DeletePromiseWaiters, names(promises.into_iter()));
        }
        if !waiters.puts.is_empty() {
            let keys: Vec<_> = waiters.puts.into_keys().collect();
            let mut params = names(keys.iter().map(|(p, _, _)| p.clone()));
            params.push(ids(keys.iter().map(|(_, id, _)| id)));
            params.push(indexes(keys.iter().map(|(_, _, i)| i)));
            push(Part::AddPromiseWaiters, params);
        }

        let wakes = self.wakes;
        if !wakes.ranges.is_empty() {
            push(Part::DeleteAllWakes, vec![ids(wakes.ranges.iter())]);
        }
        if !wakes.deletes.is_empty() {
            push(
                Part::DeleteWakes,
                vec![
                    ids(wakes.deletes.iter().map(|(k, _)| k)),
                    indexes(wakes.deletes.iter().map(|(_, i)| i)),
                ],
            );
        }
        if !wakes.puts.is_empty() {
            let keys: Vec<_> = wakes.puts.into_keys().collect();
            push(
                Part::AddWakes,
                vec![
                    ids(keys.iter().map(|(k, _)| k)),
                    indexes(keys.iter().map(|(_, i)| i)),
                ],
            );
        }

        let results = self.result_waiters;
        if !results.ranges.is_empty() {
            push(Part::DeleteResultWaiters, vec![ids(results.ranges.iter())]);
        }
        if !results.puts.is_empty() {
            let rows: Vec<_> = results.puts.into_iter().collect();
            push(
                Part::AddResultWaiters,
                vec![
                    ids(rows.iter().map(|((s, _, _), _)| s)),
                    ids(rows.iter().map(|((_, w, _), _)| w)),
                    indexes(rows.iter().map(|((_, _, i), _)| i)),
                    Box::new(rows.iter().map(|(_, call)| *call).collect::<Vec<_>>()),
                ],
            );
        }
        if !self.inbox_done.is_empty() {
            push(Part::DeleteInbox, vec![Box::new(self.inbox_done)]);
        }
        if !self.forwards.is_empty() {
            let (mut partition_keys, mut keys, mut messages) = (Vec::new(), Vec::new(), Vec::new());
            for (id, message) in self.forwards {
                partition_keys.push(id.partition_key() as i64);
                keys.push(id.storage_key().to_vec());
                messages.push(message);
            }
            push(
                Part::Forward,
                vec![Box::new(partition_keys), Box::new(keys), Box::new(messages)],
            );
        }
        let mut second = Combined::default();
        for (part, params) in parts {
            match split && !part.deletes() {
                true => second.push(part, params),
                false => first.push(part, params),
            }
        }
        [first, second]
            .into_iter()
            .filter(|statement| !statement.is_empty())
            .collect()
    }
}

fn ids<'a>(ids: impl Iterator<Item = &'a Id>) -> Param {
    Box::new(ids.map(|id| id.to_vec()).collect::<Vec<_>>())
}

fn indexes<'a>(indexes: impl Iterator<Item = &'a u32>) -> Param {
    Box::new(indexes.map(|i| i64::from(*i)).collect::<Vec<_>>())
}

fn scopes(scopes: Vec<Scope>) -> Vec<Param> {
    let (services, keys): (Vec<_>, Vec<_>) = scopes.into_iter().unzip();
    vec![Box::new(services), Box::new(keys)]
}

fn names(names: impl Iterator<Item = Named>) -> Vec<Param> {
    let (mut services, mut keys, mut names_) = (Vec::new(), Vec::new(), Vec::new());
    for (service, key, name) in names {
        services.push(service);
        keys.push(key);
        names_.push(name);
    }
    vec![Box::new(services), Box::new(keys), Box::new(names_)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::postgres::combined::shape_of;

    fn shapes(ops: Vec<WriteOp>) -> Vec<u32> {
        let mut fold = Fold::default();
        for op in ops {
            assert!(fold.add(op).unwrap().is_none());
        }
        let statements = fold.statements(Combined::default());
        statements.iter().map(Combined::shape).collect()
    }

    fn set(key: &str, name: &str) -> WriteOp {
        WriteOp::SetState {
            scope: StateScope {
                service: "S".into(),
                key: key.into(),
            },
            name: name.into(),
            value: b"1".to_vec(),
        }
    }

    fn scope(key: &str) -> StateScope {
        StateScope {
            service: "S".into(),
            key: key.into(),
        }
    }

    /// No row is touched by two parts of one statement: a put replaces a delete of its row
    /// before it, and a put into a range deleted before it sends the deletes first, alone.
    #[test]
    fn a_put_into_a_range_deleted_before_it_splits_the_statement() {
        let clear = |key: &str, name: &str| WriteOp::ClearState {
            scope: scope(key),
            name: name.into(),
        };
        let clear_all = |key: &str| WriteOp::ClearAllState { scope: scope(key) };
        assert_eq!(
            shapes(vec![clear("a", "x"), set("a", "x")]),
            vec![shape_of([Part::PutState])]
        );
        assert_eq!(
            shapes(vec![set("a", "x"), clear_all("a")]),
            vec![shape_of([Part::DeleteStateScopes])]
        );
        assert_eq!(
            shapes(vec![clear_all("a"), set("b", "x"), clear("b", "y")]),
            vec![shape_of([
                Part::DeleteStateScopes,
                Part::DeleteStateRows,
                Part::PutState
            ])]
        );
        assert_eq!(
            shapes(vec![clear_all("a"), set("a", "x")]),
            vec![
                shape_of([Part::DeleteStateScopes]),
                shape_of([Part::PutState])
            ]
        );
    }
}

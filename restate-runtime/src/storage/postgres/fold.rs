//! A group's operations folded into the fewest statements: per table, the ranges and rows it
//! deletes and the rows it finally holds, each kind sent as one statement over arrays
//! (`unnest`). A group of fifty requests is then a handful of statements, not a hundred.
//!
//! Folding keeps the meaning of applying the operations one by one: a delete drops the rows
//! put before it in the group, and the statements run deletes first, then puts, so every row
//! put after a delete survives it. Tables are independent of each other, so their order
//! does not matter; a cancel request, which reads a stored record, is folded into a record
//! put earlier in the group or, when there is none, ends the fold (see `writer.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::super::records::{self, InvocationRecord, Status};
use super::super::{StateScope, StorageError, WriteOp, hint_due};
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
}

impl<K: Ord + Clone, V, R> Default for Folded<K, V, R> {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            deletes: BTreeSet::new(),
            puts: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V, R> Folded<K, V, R> {
    fn put(&mut self, key: K, value: V) {
        self.puts.insert(key, value);
    }

    fn delete(&mut self, key: K) {
        self.puts.remove(&key);
        self.deletes.insert(key);
    }

    fn delete_range(&mut self, range: R, covers: impl Fn(&R, &K) -> bool) {
        self.puts.retain(|k, _| !covers(&range, k));
        self.deletes.retain(|k| !covers(&range, k));
        self.ranges.push(range);
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

fn in_scope(scope: &Scope, named: &Named) -> bool {
    scope.0 == named.0 && scope.1 == named.1
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
                    self.wakes.delete_range(key, |id, (k, _)| k == id);
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
                self.journal.delete_range(key, |id, (k, _)| k == id);
                self.wakes.delete_range(key, |id, (k, _)| k == id);
            }
            WriteOp::SetState {
                scope: s,
                name,
                value,
            } => {
                self.state.put(named(&s, &name), value);
            }
            WriteOp::ClearState { scope: s, name } => self.state.delete(named(&s, &name)),
            WriteOp::ClearAllState { scope: s } => self.state.delete_range(scope(&s), in_scope),
            WriteOp::PutPromise {
                scope: s,
                name,
                encoded,
            } => self.promises.put(named(&s, &name), encoded),
            WriteOp::ClearPromises { scope: s } => {
                self.promises.delete_range(scope(&s), in_scope);
                self.promise_waiters
                    .delete_range(WaiterRange::Scope(scope(&s)), covers_waiter);
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
                .delete_range(WaiterRange::Promise(named(&s, &name)), covers_waiter),
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
                self.result_waiters
                    .delete_range(source.storage_key(), |id, (s, _, _)| s == id);
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

    /// The statements, as SQL and parameters: every table's deletes before its puts.
    pub(super) fn statements(self) -> Vec<(&'static str, Vec<Param>)> {
        let mut out: Vec<(&'static str, Vec<Param>)> = Vec::new();
        let mut push = |sql: &'static str, params: Vec<Param>| out.push((sql, params));

        let inv = self.invocations;
        if !inv.deletes.is_empty() {
            push(sql::DELETE_INVOCATIONS, vec![ids(inv.deletes.iter())]);
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
                sql::PUT_INVOCATIONS,
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
            push(sql::DELETE_JOURNALS, vec![ids(journal.ranges.iter())]);
        }
        if !journal.puts.is_empty() {
            let rows: Vec<_> = journal.puts.into_iter().collect();
            push(
                sql::PUT_JOURNAL,
                vec![
                    ids(rows.iter().map(|((k, _), _)| k)),
                    indexes(rows.iter().map(|((_, i), _)| i)),
                    Box::new(rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>()),
                ],
            );
        }

        for (table, folded) in [(sql::STATE, self.state), (sql::PROMISES, self.promises)] {
            if !folded.ranges.is_empty() {
                push(table.delete_scopes, scopes(folded.ranges));
            }
            if !folded.deletes.is_empty() {
                push(table.delete_rows, names(folded.deletes.into_iter()));
            }
            if !folded.puts.is_empty() {
                let (keys, values): (Vec<_>, Vec<_>) = folded.puts.into_iter().unzip();
                let mut params = names(keys.into_iter());
                params.push(Box::new(values));
                push(table.put, params);
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
            push(sql::DELETE_SCOPE_PROMISE_WAITERS, scopes(whole));
        }
        if !promises.is_empty() {
            push(sql::DELETE_PROMISE_WAITERS, names(promises.into_iter()));
        }
        if !waiters.puts.is_empty() {
            let keys: Vec<_> = waiters.puts.into_keys().collect();
            let mut params = names(keys.iter().map(|(p, _, _)| p.clone()));
            params.push(ids(keys.iter().map(|(_, id, _)| id)));
            params.push(indexes(keys.iter().map(|(_, _, i)| i)));
            push(sql::ADD_PROMISE_WAITERS, params);
        }

        let wakes = self.wakes;
        if !wakes.ranges.is_empty() {
            push(sql::DELETE_ALL_WAKES, vec![ids(wakes.ranges.iter())]);
        }
        if !wakes.deletes.is_empty() {
            push(
                sql::DELETE_WAKES,
                vec![
                    ids(wakes.deletes.iter().map(|(k, _)| k)),
                    indexes(wakes.deletes.iter().map(|(_, i)| i)),
                ],
            );
        }
        if !wakes.puts.is_empty() {
            let keys: Vec<_> = wakes.puts.into_keys().collect();
            push(
                sql::ADD_WAKES,
                vec![
                    ids(keys.iter().map(|(k, _)| k)),
                    indexes(keys.iter().map(|(_, i)| i)),
                ],
            );
        }

        let results = self.result_waiters;
        if !results.ranges.is_empty() {
            push(sql::DELETE_RESULT_WAITERS, vec![ids(results.ranges.iter())]);
        }
        if !results.puts.is_empty() {
            let rows: Vec<_> = results.puts.into_iter().collect();
            push(
                sql::ADD_RESULT_WAITERS,
                vec![
                    ids(rows.iter().map(|((s, _, _), _)| s)),
                    ids(rows.iter().map(|((_, w, _), _)| w)),
                    indexes(rows.iter().map(|((_, _, i), _)| i)),
                    Box::new(rows.iter().map(|(_, call)| *call).collect::<Vec<_>>()),
                ],
            );
        }
        if !self.inbox_done.is_empty() {
            push(sql::DELETE_INBOX, vec![Box::new(self.inbox_done)]);
        }
        if !self.forwards.is_empty() {
            let (mut partition_keys, mut keys, mut messages) = (Vec::new(), Vec::new(), Vec::new());
            for (id, message) in self.forwards {
                partition_keys.push(id.partition_key() as i64);
                keys.push(id.storage_key().to_vec());
                messages.push(message);
            }
            push(
                sql::FORWARD,
                vec![Box::new(partition_keys), Box::new(keys), Box::new(messages)],
            );
        }
        out
    }
}

fn covers_waiter(range: &WaiterRange, (promise, _, _): &(Named, Id, u32)) -> bool {
    match range {
        WaiterRange::Scope(s) => in_scope(s, promise),
        WaiterRange::Promise(p) => p == promise,
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

/// Every statement a fold may send, for the writer to prepare.
pub(super) const ALL: &[&str] = &[
    sql::DELETE_INVOCATIONS,
    sql::PUT_INVOCATIONS,
    sql::DELETE_JOURNALS,
    sql::PUT_JOURNAL,
    sql::STATE.delete_scopes,
    sql::STATE.delete_rows,
    sql::STATE.put,
    sql::PROMISES.delete_scopes,
    sql::PROMISES.delete_rows,
    sql::PROMISES.put,
    sql::DELETE_SCOPE_PROMISE_WAITERS,
    sql::DELETE_PROMISE_WAITERS,
    sql::ADD_PROMISE_WAITERS,
    sql::DELETE_ALL_WAKES,
    sql::DELETE_WAKES,
    sql::ADD_WAKES,
    sql::DELETE_RESULT_WAITERS,
    sql::ADD_RESULT_WAITERS,
    sql::DELETE_INBOX,
    sql::FORWARD,
];

/// The statements a fold sends, each over arrays of rows.
mod sql {
    pub(super) const DELETE_INVOCATIONS: &str =
        "DELETE FROM restate_invocations WHERE id = ANY($1::bytea[])";
    pub(super) const DELETE_INBOX: &str = "DELETE FROM restate_inbox WHERE seq = ANY($1::int8[])";
    /// Messages from handlers to other partitions, in their order; they start nothing that
    /// is deduplicated at the insert (the owner that applies one finds what exists), and
    /// wake the owners at the commit.
    pub(super) const FORWARD: &str = "INSERT INTO restate_inbox (partition_key, id, starts, message) \
         SELECT t.p, t.i, false, t.m \
         FROM unnest($1::int8[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS t(p, i, m, n) \
         ORDER BY t.n \
         RETURNING pg_notify('restate_inbox', '')::text";
    pub(super) const PUT_INVOCATIONS: &str = "INSERT INTO restate_invocations \
         (id, partition_key, record, hint, due_ms, expires_at_ms) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::int8[], \
         $6::int8[]) ON CONFLICT (id) DO UPDATE SET record = excluded.record, \
         hint = excluded.hint, due_ms = excluded.due_ms, expires_at_ms = excluded.expires_at_ms";
    pub(super) const DELETE_JOURNALS: &str =
        "DELETE FROM restate_journal WHERE id = ANY($1::bytea[])";
    pub(super) const PUT_JOURNAL: &str = "INSERT INTO restate_journal (id, idx, entry) \
         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
         ON CONFLICT (id, idx) DO UPDATE SET entry = excluded.entry";

    /// A table of named values per (service, key): state and promises.
    pub(super) struct NamedTable {
        pub(super) delete_scopes: &'static str,
        pub(super) delete_rows: &'static str,
        pub(super) put: &'static str,
    }

    pub(super) const STATE: NamedTable = NamedTable {
        delete_scopes: "DELETE FROM restate_state t USING unnest($1::bytea[], $2::bytea[]) \
             AS d(service, key) WHERE t.service = d.service AND t.key = d.key",
        delete_rows: "DELETE FROM restate_state t \
             USING unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS d(service, key, name) \
             WHERE t.service = d.service AND t.key = d.key AND t.name = d.name",
        put: "INSERT INTO restate_state (service, key, name, value) \
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
             ON CONFLICT (service, key, name) DO UPDATE SET value = excluded.value",
    };

    pub(super) const PROMISES: NamedTable = NamedTable {
        delete_scopes: "DELETE FROM restate_promises t USING unnest($1::bytea[], $2::bytea[]) \
             AS d(service, key) WHERE t.service = d.service AND t.key = d.key",
        delete_rows: "DELETE FROM restate_promises t \
             USING unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS d(service, key, name) \
             WHERE t.service = d.service AND t.key = d.key AND t.name = d.name",
        put: "INSERT INTO restate_promises (service, key, name, outcome) \
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
             ON CONFLICT (service, key, name) DO UPDATE SET outcome = excluded.outcome",
    };

    pub(super) const DELETE_SCOPE_PROMISE_WAITERS: &str = "DELETE FROM restate_promise_waiters t \
         USING unnest($1::bytea[], $2::bytea[]) AS d(service, key) \
         WHERE t.service = d.service AND t.key = d.key";
    pub(super) const DELETE_PROMISE_WAITERS: &str = "DELETE FROM restate_promise_waiters t \
         USING unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS d(service, key, name) \
         WHERE t.service = d.service AND t.key = d.key AND t.name = d.name";
    pub(super) const ADD_PROMISE_WAITERS: &str = "INSERT INTO restate_promise_waiters (service, key, name, id, idx) \
         SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[]) \
         ON CONFLICT DO NOTHING";

    pub(super) const DELETE_ALL_WAKES: &str =
        "DELETE FROM restate_wakes WHERE id = ANY($1::bytea[])";
    pub(super) const DELETE_WAKES: &str = "DELETE FROM restate_wakes t \
         USING unnest($1::bytea[], $2::int8[]) AS d(id, idx) WHERE t.id = d.id AND t.idx = d.idx";
    pub(super) const ADD_WAKES: &str = "INSERT INTO restate_wakes (id, idx) \
         SELECT * FROM unnest($1::bytea[], $2::int8[]) ON CONFLICT DO NOTHING";

    pub(super) const DELETE_RESULT_WAITERS: &str =
        "DELETE FROM restate_result_waiters WHERE source = ANY($1::bytea[])";
    pub(super) const ADD_RESULT_WAITERS: &str = "INSERT INTO restate_result_waiters (source, waiter, idx, call) \
         SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::bool[]) \
         ON CONFLICT (source, waiter, idx) DO UPDATE SET call = excluded.call";
}

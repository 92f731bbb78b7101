//! Point reads in groups: whether messages wait in an inbox for a key or an id (each handler's
//! send or call to a key, each keyed or idempotent request from outside), a state value (each
//! handler's `get`), an invocation's record (each wait for a result). Asked by many tasks at
//! once, they are read many to one statement, a queue per kind ([`Lookup`]). A group takes
//! only what was asked before its statement began: every answer comes from a read that began
//! after it was asked, so what committed before the ask is seen (per-key order across
//! processes, as with a read of its own). A few groups of a kind are read at once, so that one
//! slow statement holds up only its own asks; while all of those run, the next group gathers.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::Row;

use super::{Param, Reads, Unanswered, backend, query};
use crate::ids::InvocationId;
use crate::storage::records::{self, InvocationRecord};
use crate::storage::{InboxPending, StateScope, StorageError};

/// Asks one group takes at most.
const MAX_GROUP: usize = 1_000;
/// Groups of one kind read at once.
const READS_AT_ONCE: usize = 2;

/// A kind of point read: its statement, which answers one row per ask in the order asked.
pub(super) trait Lookup: 'static {
    /// What one ask names.
    type Key: Send + 'static;
    /// What one ask is answered.
    type Answer: Send + 'static;
    /// The statement, over arrays of the asks' keys.
    const SQL: &'static str;
    /// The statement's parameters for these asks.
    fn params(keys: Vec<&Self::Key>) -> Vec<Param>;
    /// One ask's answer, from its row.
    fn answer(row: &Row) -> Result<Self::Answer, StorageError>;
}

/// One read on its way, counted in [`Storage::unanswered`](crate::storage::Storage::unanswered)
/// until it is answered.
pub(super) struct Ask<L: Lookup> {
    pub(super) key: L::Key,
    pub(super) done: oneshot::Sender<Result<L::Answer, StorageError>>,
    pub(super) reading: Unanswered,
}

/// Whether messages wait in an inbox: any for the id, and any for its key (its partition key).
pub(super) struct Inbox;

impl Lookup for Inbox {
    type Key = InvocationId;
    type Answer = InboxPending;
    /// `OFFSET 0` keeps each `EXISTS` a lookup per ask: without it the planner may hash the
    /// whole inbox for every group.
    const SQL: &'static str = "SELECT \
         EXISTS (SELECT 1 FROM restate_inbox i WHERE i.partition_key = t.p AND i.id = t.i OFFSET 0), \
         EXISTS (SELECT 1 FROM restate_inbox i WHERE i.partition_key = t.p OFFSET 0) \
         FROM unnest($1::int8[], $2::bytea[]) WITH ORDINALITY AS t(p, i, n) ORDER BY t.n";

    fn params(ids: Vec<&InvocationId>) -> Vec<Param> {
        let keys: Vec<i64> = ids.iter().map(|id| id.partition_key() as i64).collect();
        vec![Box::new(keys), id_keys(ids)]
    }

    fn answer(row: &Row) -> Result<InboxPending, StorageError> {
        Ok(InboxPending {
            starts: row.try_get(0).map_err(backend)?,
            partition: row.try_get(1).map_err(backend)?,
        })
    }
}

/// A state value, or `None`.
pub(super) struct State;

impl Lookup for State {
    type Key = (StateScope, String);
    type Answer = Option<Vec<u8>>;
    const SQL: &'static str = "SELECT s.value \
         FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) WITH ORDINALITY AS t(service, key, name, n) \
         LEFT JOIN restate_state s ON s.service = t.service AND s.key = t.key AND s.name = t.name \
         ORDER BY t.n";

    fn params(names: Vec<&(StateScope, String)>) -> Vec<Param> {
        let column = |of: fn(&(StateScope, String)) -> &str| -> Param {
            let values: Vec<Vec<u8>> = names.iter().map(|n| of(n).as_bytes().to_vec()).collect();
            Box::new(values)
        };
        vec![
            column(|(scope, _)| &scope.service),
            column(|(scope, _)| &scope.key),
            column(|(_, name)| name),
        ]
    }

    fn answer(row: &Row) -> Result<Option<Vec<u8>>, StorageError> {
        row.try_get(0).map_err(backend)
    }
}

/// An invocation's record, or `None`.
pub(super) struct Record;

impl Lookup for Record {
    type Key = InvocationId;
    type Answer = Option<InvocationRecord>;
    const SQL: &'static str = "SELECT v.record \
         FROM unnest($1::bytea[]) WITH ORDINALITY AS t(id, n) \
         LEFT JOIN restate_invocations v ON v.id = t.id ORDER BY t.n";

    fn params(ids: Vec<&InvocationId>) -> Vec<Param> {
        vec![id_keys(ids)]
    }

    /// A record this binary cannot read (a newer one's, during a rolling deploy) fails its
    /// own ask only.
    fn answer(row: &Row) -> Result<Option<InvocationRecord>, StorageError> {
        let record: Option<&[u8]> = row.try_get(0).map_err(backend)?;
        Ok(record.map(records::decode).transpose()?)
    }
}

/// The ids, as a `bytea[]` parameter.
fn id_keys(ids: Vec<&InvocationId>) -> Param {
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.storage_key().to_vec()).collect();
    Box::new(keys)
}

/// Reads what is asked of one kind, in groups, until the queue closes.
pub(super) async fn run<L: Lookup>(reads: Reads, mut asked: mpsc::UnboundedReceiver<Ask<L>>) {
    let slots = Arc::new(Semaphore::new(READS_AT_ONCE));
    while let Some(first) = asked.recv().await {
        // A slot first: what is asked while every slot is taken joins this group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match asked.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let reads = reads.clone();
        tokio::spawn(async move {
            answer(reads, group).await;
            drop(slot);
        });
    }
}

/// Reads one group and answers each of its asks from its own row (or with the statement's
/// error); the asks stop counting once answered.
pub(super) async fn answer<L: Lookup>(reads: Reads, group: Vec<Ask<L>>) {
    let params = L::params(group.iter().map(|ask| &ask.key).collect());
    let rows = query(reads, L::SQL, params).await.and_then(|rows| {
        if rows.len() != group.len() {
            return Err(StorageError::Backend(format!(
                "a grouped read answered {} rows for {} asks",
                rows.len(),
                group.len()
            )));
        }
        Ok(rows)
    });
    let answers = rows.map(|rows| rows.iter().map(L::answer).collect());
    let (callers, reading): (Vec<_>, Vec<_>) = (group.into_iter())
        .map(|Ask { done, reading, .. }| (done, reading))
        .unzip();
    super::answer_each(callers, answers);
    // After the answers: their readers are woken before the reads stop counting.
    drop(reading);
}

//! Forwarding in groups: messages for the owner's inbox, queued by any task of a process that
//! does not run their invocations, written many to one statement (one transaction, one WAL
//! flush for all of them), each answered once that statement committed.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{answer_each, backend, pg_error};
use crate::ids::InvocationId;
use crate::storage::{Forwarded, StorageError};

/// Messages one statement takes at most, and the bytes after which it takes no more.
const MAX_GROUP: usize = 1_000;
const MAX_GROUP_BYTES: usize = 8 << 20;

/// One message on its way to an inbox.
pub(super) struct Outgoing {
    pub(super) id: InvocationId,
    pub(super) starts: bool,
    pub(super) encoded: Vec<u8>,
    pub(super) done: oneshot::Sender<Result<Forwarded, StorageError>>,
}

/// The duplicate check, the insert and the owner's wake-up, for a whole group: a message that
/// starts an invocation is written only if no stored invocation and no inbox message (of this
/// group either: the first to arrive) has its id. Rows go in in id order, so two processes'
/// groups take the unique index's locks in one order and cannot deadlock; messages of one
/// group arrived together, so no order among them was promised (one client's next message
/// waits for the answer to its last). `OFFSET 0` keeps the `EXISTS` a lookup per row: without
/// it the planner may hash the whole table of invocations for every group.
pub(super) const INSERT: &str = "INSERT INTO restate_inbox (partition_key, id, starts, message) \
     SELECT t.p, t.i, t.s, t.m \
     FROM unnest($1::int8[], $2::bytea[], $3::bool[], $4::bytea[]) WITH ORDINALITY AS t(p, i, s, m, n) \
     WHERE NOT (t.s AND EXISTS (SELECT 1 FROM restate_invocations v WHERE v.id = t.i OFFSET 0)) \
     ORDER BY t.i, t.n \
     ON CONFLICT (id) WHERE starts DO NOTHING \
     RETURNING id, starts, seq, pg_notify('restate_inbox', '')::text";

/// Of the messages that start the group's invocations, those whose invocation a record names
/// by now are removed again: the statement above judged by what was committed when it began,
/// and the owner may since have stored the invocation of an earlier message and removed that
/// message (its unique row gone, nothing left to conflict with). It names the group's ids, not
/// the rows written, so that it is sent without waiting for the insert's answer: another
/// process's message it removes too is one whose invocation is stored (a duplicate the owner
/// would remove once applied).
pub(super) const LATE_DUPLICATES: &str = "DELETE FROM restate_inbox i USING restate_invocations v \
     WHERE i.id = ANY($1::bytea[]) AND i.starts AND v.id = i.id RETURNING i.seq";

/// The transaction's ends, sent with its statements.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const COMMIT: &str = "COMMIT";

/// Writes what is queued, a group at a time, until the queue closes.
pub(super) async fn run(pool: Pool, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.encoded.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.encoded.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let answers = write_retrying(&pool, &group).await;
        let answers = answers.map(|answers| answers.into_iter().map(Ok).collect());
        answer_each(group.into_iter().map(|outgoing| outgoing.done), answers);
    }
}

/// How often a group PostgreSQL rolled back (a deadlock with another process's group that
/// inserts the same ids in another order) is written again before its callers hear an error.
const DEADLOCK_RETRIES: usize = 3;

/// [`write`], again after a deadlock or a serialization failure: the statement was rolled
/// back, so writing it again is safe.
async fn write_retrying(pool: &Pool, group: &[Outgoing]) -> Result<Vec<Forwarded>, StorageError> {
    let mut tries = 0;
    loop {
        match write(pool, group).await {
            Err(Retry::Again(e)) if tries < DEADLOCK_RETRIES => {
                tries += 1;
                tracing::debug!("forwarding rolled back ({e}); writing the group again");
            }
            Err(Retry::Again(e) | Retry::Failed(e)) => return Err(e),
            Ok(answers) => return Ok(answers),
        }
    }
}

/// A failed statement of a group, as [`Retry`]: a deadlock or a serialization failure rolled
/// the transaction back, and the group may be written again.
fn rolled_back(e: tokio_postgres::Error) -> Retry {
    use tokio_postgres::error::SqlState;
    let again = e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    });
    let failed = StorageError::Backend(format!("forwarding failed: {}", pg_error(&e)));
    if again {
        Retry::Again(failed)
    } else {
        Retry::Failed(failed)
    }
}

/// A failed group: one rolled back by the database (safe to write again), or another error.
enum Retry {
    Again(StorageError),
    Failed(StorageError),
}

/// One transaction, its four statements sent at once (pipelined): the database runs it to its
/// end without waiting for this process, so no row lock it takes outlives it by a round trip
/// (the owner's claim of an id waits on the insert's row; a process paused mid-transaction
/// would hold it).
async fn write(pool: &Pool, group: &[Outgoing]) -> Result<Vec<Forwarded>, Retry> {
    let client = pool.get().await.map_err(|e| {
        Retry::Failed(StorageError::Backend(format!(
            "no PostgreSQL connection: {e}"
        )))
    })?;
    let prepared = futures::future::try_join4(
        client.prepare_cached(BEGIN),
        client.prepare_cached(INSERT),
        client.prepare_cached(LATE_DUPLICATES),
        client.prepare_cached(COMMIT),
    );
    let (begin, statement, recheck, commit) =
        prepared.await.map_err(|e| Retry::Failed(backend(e)))?;
    let partition_keys: Vec<i64> = group.iter().map(|o| o.id.partition_key() as i64).collect();
    let ids: Vec<Vec<u8>> = group.iter().map(|o| o.id.storage_key().to_vec()).collect();
    let starts: Vec<bool> = group.iter().map(|o| o.starts).collect();
    let messages: Vec<&[u8]> = group.iter().map(|o| o.encoded.as_slice()).collect();
    let starting: Vec<&Vec<u8>> = (group.iter().zip(&ids))
        .filter(|(o, _)| o.starts)
        .map(|(_, id)| id)
        .collect();
    let insert_params: [&(dyn ToSql + Sync); 4] = [&partition_keys, &ids, &starts, &messages];
    let recheck_params: [&(dyn ToSql + Sync); 1] = [&starting];
    // Polled in order, each sent when first polled: they reach the server in this order.
    let (begun, rows, late, committed) = futures::join!(
        client.execute(&begin, &[]),
        client.query(&statement, &insert_params),
        client.query(&recheck, &recheck_params),
        client.execute(&commit, &[]),
    );
    // A failed statement aborts the transaction: the later ones fail or, `COMMIT`, roll back.
    begun.map_err(rolled_back)?;
    let rows = rows.map_err(rolled_back)?;
    let late: std::collections::HashSet<i64> = (late.map_err(rolled_back)?.iter())
        .map(|row| row.get(0))
        .collect();
    committed.map_err(rolled_back)?;
    // Of the messages that start an invocation, those written: the first of each id.
    let mut written: HashMap<Vec<u8>, usize> = HashMap::new();
    for row in &rows {
        if row.get::<_, bool>(1) && !late.contains(&row.get::<_, i64>(2)) {
            *written.entry(row.get(0)).or_default() += 1;
        }
    }
    Ok(group
        .iter()
        .zip(ids)
        .map(|(outgoing, id)| {
            if !outgoing.starts {
                return Forwarded::New;
            }
            match written.get_mut(&id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Forwarded::New
                }
                _ => Forwarded::Duplicate,
            }
        })
        .collect())
}

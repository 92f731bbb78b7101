//! The writer: one connection that commits queued batches in groups (group commit), one
//! transaction per group, its statements pipelined (sent before any answer is awaited, in
//! order), and answers each batch once the group's `COMMIT` returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::try_join_all;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};

use super::super::hint_due;
use super::super::records::{self, InvocationRecord, Status};
use super::super::{StorageError, WriteOp, WriterStats};
use super::{Param, bytes, millis, pg_error, scope_params};

/// What the storage handle hands the writer.
pub(super) enum Message {
    Batch(Batch),
    /// Commit everything queued before, then stop and say so.
    Close(std::sync::mpsc::Sender<()>),
}

pub(super) struct Batch {
    pub(super) ops: Vec<WriteOp>,
    pub(super) bytes: usize,
    pub(super) done: oneshot::Sender<Result<(), StorageError>>,
}

/// Shared by the storage handle and its writer.
pub(super) struct Shared {
    pub(super) failure: watch::Sender<Option<String>>,
    pub(super) stats: Mutex<WriterStats>,
    /// Bytes submitted and not yet answered.
    pub(super) queued: AtomicUsize,
    /// Batches submitted and not yet answered.
    pub(super) unanswered: AtomicUsize,
    /// Closed: writes are refused, and the writer's connection may end.
    pub(super) closed: AtomicBool,
}

impl Shared {
    /// Answers a batch and takes it off the queue counts.
    pub(super) fn answer(&self, batch: Batch, result: Result<(), StorageError>) {
        self.queued.fetch_sub(batch.bytes, Ordering::Relaxed);
        let _ = batch.done.send(result);
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
    }

    /// From now on nothing is acknowledged (law 10).
    pub(super) fn poison(&self, reason: String) {
        self.failure.send_if_modified(|failure| {
            failure.get_or_insert(reason);
            true
        });
    }

    fn poisoned(&self) -> Option<String> {
        self.failure.borrow().clone()
    }
}

/// The statements the writer runs, prepared once on its connection.
struct Statements {
    put_invocation: Statement,
    delete_invocation: Statement,
    put_journal: Statement,
    delete_journal: Statement,
    set_state: Statement,
    clear_state: Statement,
    clear_all_state: Statement,
    put_promise: Statement,
    clear_promises: Statement,
    add_promise_waiter: Statement,
    clear_promise_waiters: Statement,
    clear_scope_promise_waiters: Statement,
    wake: Statement,
    clear_wakes: Statement,
    clear_all_wakes: Statement,
    add_result_waiter: Statement,
    clear_result_waiters: Statement,
    read_record: Statement,
    put_record: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let scope = "service = $1 AND key = $2";
        Ok(Self {
            put_invocation: client
                .prepare(
                    "INSERT INTO restate_invocations \
                     (id, partition_key, record, hint, due_ms, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
                     record = excluded.record, hint = excluded.hint, due_ms = excluded.due_ms, \
                     expires_at_ms = excluded.expires_at_ms",
                )
                .await?,
            delete_invocation: client
                .prepare("DELETE FROM restate_invocations WHERE id = $1")
                .await?,
            put_journal: client
                .prepare(
                    "INSERT INTO restate_journal (id, idx, entry) VALUES ($1, $2, $3) \
                     ON CONFLICT (id, idx) DO UPDATE SET entry = excluded.entry",
                )
                .await?,
            delete_journal: client
                .prepare("DELETE FROM restate_journal WHERE id = $1")
                .await?,
            set_state: client
                .prepare(
                    "INSERT INTO restate_state (service, key, name, value) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (service, key, name) DO UPDATE SET value = excluded.value",
                )
                .await?,
            clear_state: client
                .prepare(&format!(
                    "DELETE FROM restate_state WHERE {scope} AND name = $3"
                ))
                .await?,
            clear_all_state: client
                .prepare(&format!("DELETE FROM restate_state WHERE {scope}"))
                .await?,
            put_promise: client
                .prepare(
                    "INSERT INTO restate_promises (service, key, name, outcome) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (service, key, name) \
                     DO UPDATE SET outcome = excluded.outcome",
                )
                .await?,
            clear_promises: client
                .prepare(&format!("DELETE FROM restate_promises WHERE {scope}"))
                .await?,
            add_promise_waiter: client
                .prepare(
                    "INSERT INTO restate_promise_waiters (service, key, name, id, idx) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .await?,
            clear_promise_waiters: client
                .prepare(&format!(
                    "DELETE FROM restate_promise_waiters WHERE {scope} AND name = $3"
                ))
                .await?,
            clear_scope_promise_waiters: client
                .prepare(&format!(
                    "DELETE FROM restate_promise_waiters WHERE {scope}"
                ))
                .await?,
            wake: client
                .prepare(
                    "INSERT INTO restate_wakes (id, idx) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .await?,
            clear_wakes: client
                .prepare("DELETE FROM restate_wakes WHERE id = $1 AND idx = ANY($2)")
                .await?,
            clear_all_wakes: client
                .prepare("DELETE FROM restate_wakes WHERE id = $1")
                .await?,
            add_result_waiter: client
                .prepare(
                    "INSERT INTO restate_result_waiters (source, waiter, idx, call) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (source, waiter, idx) \
                     DO UPDATE SET call = excluded.call",
                )
                .await?,
            clear_result_waiters: client
                .prepare("DELETE FROM restate_result_waiters WHERE source = $1")
                .await?,
            read_record: client
                .prepare("SELECT record FROM restate_invocations WHERE id = $1")
                .await?,
            put_record: client
                .prepare("UPDATE restate_invocations SET record = $2 WHERE id = $1")
                .await?,
        })
    }
}

/// One statement of a group, with its parameters owned so that it can be sent before the
/// statements ahead of it are answered.
type Step<'a> = (&'a Statement, Vec<Param>);

/// Runs until the queue closes or a commit fails.
pub(super) async fn run(
    mut client: Client,
    mut queue: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    max_group_bytes: usize,
) {
    let statements = match Statements::prepare(&client).await {
        Ok(statements) => statements,
        Err(e) => {
            shared.poison(format!(
                "preparing the writer's statements failed: {}",
                pg_error(&e)
            ));
            return refuse_all(queue, &shared).await;
        }
    };
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut group = Vec::new();
        match first {
            Message::Batch(batch) => group.push(batch),
            Message::Close(ack) => closing = Some(ack),
        }
        let mut bytes = group.first().map_or(0, |b| b.bytes);
        while closing.is_none() && bytes < max_group_bytes {
            match queue.try_recv() {
                Ok(Message::Batch(batch)) => {
                    bytes += batch.bytes;
                    group.push(batch);
                }
                Ok(Message::Close(ack)) => closing = Some(ack),
                Err(_) => break,
            }
        }
        if group.is_empty() {
            break;
        }
        if let Some(reason) = shared.poisoned() {
            for batch in group {
                shared.answer(batch, Err(StorageError::Poisoned(reason.clone())));
            }
            continue;
        }
        let started = Instant::now();
        match commit(&mut client, &statements, &group).await {
            Ok(()) => {
                let mut stats = shared.stats.lock().expect("stats lock");
                stats.commits += 1;
                stats.batches += group.len() as u64;
                stats.bytes += bytes as u64;
                stats.commit_micros += started.elapsed().as_micros() as u64;
                drop(stats);
                for batch in group {
                    shared.answer(batch, Ok(()));
                }
            }
            Err(e) => {
                let reason = format!("journal commit failed: {e}");
                tracing::error!(%reason, "PostgreSQL commit failed; nothing is acknowledged from now on");
                shared.poison(reason.clone());
                for batch in group {
                    shared.answer(batch, Err(StorageError::Backend(reason.clone())));
                }
            }
        }
    }
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// Answers whatever is queued with the failure, until the queue closes.
async fn refuse_all(mut queue: mpsc::UnboundedReceiver<Message>, shared: &Shared) {
    while let Some(message) = queue.recv().await {
        match message {
            Message::Batch(batch) => {
                let reason = shared.poisoned().unwrap_or_default();
                shared.answer(batch, Err(StorageError::Poisoned(reason)));
            }
            Message::Close(ack) => {
                let _ = ack.send(());
                return;
            }
        }
    }
}

/// One transaction for the whole group: every statement is sent in order without waiting,
/// except around a cancel request, whose record is read, changed and written back.
async fn commit(
    client: &mut Client,
    statements: &Statements,
    group: &[Batch],
) -> Result<(), StorageError> {
    let tx = client.transaction().await.map_err(backend)?;
    let mut pending: Vec<Step<'_>> = Vec::new();
    for op in group.iter().flat_map(|batch| &batch.ops) {
        if let WriteOp::RequestCancel { id } = op {
            send(&tx, std::mem::take(&mut pending)).await?;
            request_cancel(&tx, statements, id.storage_key().to_vec()).await?;
        } else {
            steps(statements, op, &mut pending)?;
        }
    }
    send(&tx, pending).await?;
    tx.commit().await.map_err(|e| {
        StorageError::Backend(format!(
            "COMMIT failed, its outcome is unknown (recovery reads what landed): {}",
            pg_error(&e)
        ))
    })
}

async fn send(tx: &Transaction<'_>, steps: Vec<Step<'_>>) -> Result<(), StorageError> {
    // `try_join_all` polls the futures in order on its first poll, and each sends its
    // statement when first polled: they reach the server in the group's order.
    try_join_all(
        steps
            .into_iter()
            .map(|(statement, params)| tx.execute_raw(statement, params)),
    )
    .await
    .map_err(backend)?;
    Ok(())
}

async fn request_cancel(
    tx: &Transaction<'_>,
    statements: &Statements,
    key: Vec<u8>,
) -> Result<(), StorageError> {
    let Some(row) = tx
        .query_opt(&statements.read_record, &[&key])
        .await
        .map_err(backend)?
    else {
        return Ok(());
    };
    let mut record: InvocationRecord = records::decode(row.get::<_, &[u8]>(0))?;
    if matches!(record.status, Status::Completed { .. }) {
        return Ok(());
    }
    record.cancel_requested = true;
    tx.execute(&statements.put_record, &[&key, &records::encode(&record)])
        .await
        .map_err(backend)?;
    Ok(())
}

/// The statements of one operation (a cancel request is not one of them).
fn steps<'a>(s: &'a Statements, op: &WriteOp, out: &mut Vec<Step<'a>>) -> Result<(), StorageError> {
    fn p<T: ToSql + Sync + Send + 'static>(value: T) -> Param {
        Box::new(value)
    }
    match op {
        WriteOp::PutInvocation {
            id,
            encoded,
            expires_at_ms,
            unfinished,
            stored_before,
        } => {
            let key = id.storage_key().to_vec();
            let due = match unfinished {
                Some(hint) => hint_due(hint)?,
                None => None,
            };
            if expires_at_ms.is_some() && *stored_before {
                out.push((&s.clear_all_wakes, vec![p(key.clone())]));
            }
            out.push((
                &s.put_invocation,
                vec![
                    p(key),
                    p(id.partition_key() as i64),
                    p(encoded.clone()),
                    p(unfinished.clone()),
                    p(due.map(millis)),
                    p(expires_at_ms.map(millis)),
                ],
            ));
        }
        WriteOp::PutJournal { id, index, encoded } => out.push((
            &s.put_journal,
            vec![
                p(id.storage_key().to_vec()),
                p(i64::from(*index)),
                p(encoded.clone()),
            ],
        )),
        WriteOp::DeleteInvocation { id } => {
            let key = id.storage_key().to_vec();
            out.push((&s.delete_invocation, vec![p(key.clone())]));
            out.push((&s.delete_journal, vec![p(key.clone())]));
            out.push((&s.clear_all_wakes, vec![p(key)]));
        }
        WriteOp::SetState { scope, name, value } => {
            let mut params = scope_params(scope);
            params.extend([bytes(name), p(value.clone())]);
            out.push((&s.set_state, params));
        }
        WriteOp::ClearState { scope, name } => {
            let mut params = scope_params(scope);
            params.push(bytes(name));
            out.push((&s.clear_state, params));
        }
        WriteOp::ClearAllState { scope } => out.push((&s.clear_all_state, scope_params(scope))),
        WriteOp::PutPromise {
            scope,
            name,
            encoded,
        } => {
            let mut params = scope_params(scope);
            params.extend([bytes(name), p(encoded.clone())]);
            out.push((&s.put_promise, params));
        }
        WriteOp::ClearPromises { scope } => {
            out.push((&s.clear_promises, scope_params(scope)));
            out.push((&s.clear_scope_promise_waiters, scope_params(scope)));
        }
        WriteOp::AddPromiseWaiter {
            scope,
            name,
            id,
            index,
        } => {
            let mut params = scope_params(scope);
            params.extend([
                bytes(name),
                p(id.storage_key().to_vec()),
                p(i64::from(*index)),
            ]);
            out.push((&s.add_promise_waiter, params));
        }
        WriteOp::ClearPromiseWaiters { scope, name } => {
            let mut params = scope_params(scope);
            params.push(bytes(name));
            out.push((&s.clear_promise_waiters, params));
        }
        WriteOp::Wake { id, index } => out.push((
            &s.wake,
            vec![p(id.storage_key().to_vec()), p(i64::from(*index))],
        )),
        WriteOp::ClearWakes { id, indexes } => out.push((
            &s.clear_wakes,
            vec![
                p(id.storage_key().to_vec()),
                p(indexes.iter().map(|i| i64::from(*i)).collect::<Vec<_>>()),
            ],
        )),
        WriteOp::AddResultWaiter {
            source,
            waiter,
            index,
            call,
        } => out.push((
            &s.add_result_waiter,
            vec![
                p(source.storage_key().to_vec()),
                p(waiter.storage_key().to_vec()),
                p(i64::from(*index)),
                p(*call),
            ],
        )),
        WriteOp::ClearResultWaiters { source } => out.push((
            &s.clear_result_waiters,
            vec![p(source.storage_key().to_vec())],
        )),
        WriteOp::RequestCancel { .. } => unreachable!("a cancel request reads before it writes"),
    }
    Ok(())
}

fn backend(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(pg_error(&e))
}

//! The writer: one connection that commits queued batches in groups (group commit), one
//! transaction per group, its statements pipelined (sent before any answer is awaited, in
//! order), and answers each batch once the group's `COMMIT` returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Statement};

use super::super::records::{self, InvocationRecord, Status};
use super::super::{Partitions, StorageError, WriteOp, WriterStats};
use super::fold::{self, Fold};
use super::ownership::Lease;
use super::{FINISHED_CHANNEL, Param, pg_error};

/// What the storage handle hands the writer.
pub(super) enum Message {
    Batch(Batch),
    /// Leave the lease expired from the next transaction on (`true`: a drained process lets
    /// another take over at once) or renew it again (`false`); answered once a transaction
    /// with the new length committed.
    Release(bool, oneshot::Sender<Result<(), StorageError>>),
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
    /// This process runs the database's invocations: its writer holds the lease.
    pub(super) owner: watch::Sender<bool>,
    /// The partitions it runs: all of them while it holds the lease, none before or after.
    pub(super) owned: watch::Sender<Partitions>,
}

impl Shared {
    /// Answers a batch and takes it off the queue counts.
    pub(super) fn answer(&self, batch: Batch, result: Result<(), StorageError>) {
        self.queued.fetch_sub(batch.bytes, Ordering::Relaxed);
        let _ = batch.done.send(result);
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes the lease (`true`) or lost it: every partition is this process's, or none.
    pub(super) fn set_owner(&self, owner: bool) {
        let count = self.owned.borrow().count();
        self.owned.send_replace(match owner {
            true => Partitions::all(count),
            false => Partitions::none(count),
        });
        self.owner.send_replace(owner);
    }

    /// From now on nothing is acknowledged (law 10).
    pub(super) fn poison(&self, reason: String) {
        self.failure.send_if_modified(|failure| {
            failure.get_or_insert(reason);
            true
        });
    }

    pub(super) fn poisoned(&self) -> Option<String> {
        self.failure.borrow().clone()
    }
}

/// The statements the writer runs, prepared once on its connection.
struct Statements {
    begin: Statement,
    /// `restate_fence` with this process's epoch: the transaction fails once another process
    /// has taken the lease over.
    fence: Statement,
    lease: Lease,
    commit: Statement,
    /// Wakes other processes that wait on an invocation's end (sent at the commit).
    notify_finished: Statement,
    read_record: Statement,
    put_record: Statement,
    /// Those of [`Fold::statements`], by their SQL.
    folded: HashMap<&'static str, Statement>,
}

impl Statements {
    async fn prepare(client: &Client, lease: Lease) -> Result<Self, tokio_postgres::Error> {
        let mut folded = HashMap::new();
        for sql in fold::ALL {
            folded.insert(*sql, client.prepare(sql).await?);
        }
        Ok(Self {
            begin: client.prepare("BEGIN").await?,
            fence: client.prepare("SELECT restate_fence($1, $2)").await?,
            lease,
            commit: client.prepare("COMMIT").await?,
            notify_finished: client
                .prepare(&format!(
                    "SELECT pg_notify('{FINISHED_CHANNEL}', p)::text FROM unnest($1::text[]) p"
                ))
                .await?,
            read_record: client
                .prepare("SELECT record FROM restate_invocations WHERE id = $1")
                .await?,
            put_record: client
                .prepare("UPDATE restate_invocations SET record = $2 WHERE id = $1")
                .await?,
            folded,
        })
    }
}

/// One statement of a group, with its parameters owned so that it can be sent before the
/// statements ahead of it are answered.
type Step<'a> = (&'a Statement, Vec<Param>);

/// Runs until the queue closes or a commit fails.
pub(super) async fn run(
    client: Client,
    mut queue: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    max_group_bytes: usize,
    lease: Lease,
) {
    let statements = match Statements::prepare(&client, lease).await {
        Ok(statements) => statements,
        Err(e) => {
            let reason = format!("preparing the writer's statements failed: {}", pg_error(&e));
            shared.poison(reason.clone());
            return refuse_all(queue, &shared, StorageError::Poisoned(reason)).await;
        }
    };
    // Every transaction renews the lease; an idle writer renews it with an empty one. A
    // released lease is left expired, and the writer looks more often whether another
    // process has taken it.
    let renew_every = Duration::from_millis(lease.ttl_ms.max(3) as u64 / 3);
    let mut released = false;
    let mut closing = None;
    while closing.is_none() {
        let idle = if released {
            renew_every.min(RELEASED_CHECK)
        } else {
            renew_every
        };
        let first = match tokio::time::timeout(idle, queue.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_idle) => {
                if shared.poisoned().is_none() {
                    match commit_ops(&client, &statements, released, released, Vec::new()).await {
                        Committed::Done => {}
                        Committed::HandedOver => return handed_over(queue, &shared).await,
                        Committed::Failed(e) => {
                            let reason = format!("renewing the lease failed: {e}");
                            tracing::error!(%reason, "nothing is acknowledged from now on");
                            shared.poison(reason);
                        }
                    }
                }
                continue;
            }
        };
        let mut group = Vec::new();
        let mut release = None;
        match first {
            Message::Batch(batch) => group.push(batch),
            Message::Release(on, ack) => release = Some((on, ack)),
            Message::Close(ack) => closing = Some(ack),
        }
        let mut bytes = group.first().map_or(0, |b| b.bytes);
        while closing.is_none() && release.is_none() && bytes < max_group_bytes {
            match queue.try_recv() {
                Ok(Message::Batch(batch)) => {
                    bytes += batch.bytes;
                    group.push(batch);
                }
                Ok(Message::Release(on, ack)) => release = Some((on, ack)),
                Ok(Message::Close(ack)) => closing = Some(ack),
                Err(_) => break,
            }
        }
        // The batches before a change of the lease commit with the lease as it was.
        if !group.is_empty()
            && commit_group(&client, &statements, released, group, bytes, &shared).await
        {
            if let Some((_, ack)) = release {
                let _ = ack.send(Err(handover_error()));
            }
            if let Some(ack) = closing {
                // Closing: nothing more comes to refuse.
                let _ = ack.send(());
                return;
            }
            return handed_over(queue, &shared).await;
        }
        let Some((on, ack)) = release else {
            continue;
        };
        if let Some(reason) = shared.poisoned() {
            let _ = ack.send(Err(StorageError::Poisoned(reason)));
            continue;
        }
        // A fence refused while the lease was released is a hand-over; any other failure
        // (a held lease taken after it expired, a lost connection) stops the store.
        match commit_ops(&client, &statements, on, released, Vec::new()).await {
            Committed::Done => {
                released = on;
                let _ = ack.send(Ok(()));
            }
            Committed::HandedOver => {
                // Known before the undrain that asked is told.
                shared.set_owner(false);
                let _ = ack.send(Err(handover_error()));
                return handed_over(queue, &shared).await;
            }
            Committed::Failed(e) => {
                let reason = format!("changing the lease failed: {e}");
                tracing::error!(%reason, "nothing is acknowledged from now on");
                shared.poison(reason.clone());
                let _ = ack.send(Err(StorageError::Poisoned(reason)));
            }
        }
    }
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// How often a writer whose lease is released looks whether another process took it over.
const RELEASED_CHECK: Duration = Duration::from_millis(200);

/// What `restate_fence` raises when another process holds the lease (the migration's text).
const FENCED: &str = "fenced: another process has taken this database over";

/// What became of a transaction.
enum Committed {
    Done,
    /// Refused by the fence after this process released its lease: another one took it.
    HandedOver,
    /// Any other failure: nothing may be acknowledged from now on (law 10).
    Failed(String),
}

/// Commits `ops` with the lease left expired (`release`) or renewed; a fence refusal is a
/// hand-over when the lease was released before (`was_released`).
async fn commit_ops(
    client: &Client,
    statements: &Statements,
    release: bool,
    was_released: bool,
    ops: Vec<WriteOp>,
) -> Committed {
    match committed(client, statements, release, ops).await {
        Ok(()) => Committed::Done,
        Err(StorageError::Backend(m)) if was_released && m.contains(FENCED) => {
            Committed::HandedOver
        }
        Err(e) => Committed::Failed(e.to_string()),
    }
}

/// Commits one group and answers its batches; `true` when it was refused because another
/// process took the released lease over (then the batches are answered so).
async fn commit_group(
    client: &Client,
    statements: &Statements,
    released: bool,
    mut group: Vec<Batch>,
    bytes: usize,
    shared: &Shared,
) -> bool {
    if let Some(reason) = shared.poisoned() {
        for batch in group {
            shared.answer(batch, Err(StorageError::Poisoned(reason.clone())));
        }
        return false;
    }
    let started = Instant::now();
    // The operations move into the statements: their bytes are not copied again.
    let ops = group
        .iter_mut()
        .flat_map(|b| std::mem::take(&mut b.ops))
        .collect();
    match commit_ops(client, statements, released, released, ops).await {
        Committed::Done => {
            let mut stats = shared.stats.lock().expect("stats lock");
            stats.commits += 1;
            stats.batches += group.len() as u64;
            stats.bytes += bytes as u64;
            stats.commit_micros += started.elapsed().as_micros() as u64;
            stats.commit_latency.observe(started.elapsed());
            drop(stats);
            for batch in group {
                shared.answer(batch, Ok(()));
            }
            false
        }
        Committed::HandedOver => {
            // Known before anyone is told: a renewal refused by the hand-over says so.
            shared.set_owner(false);
            for batch in group {
                shared.answer(batch, Err(handover_error()));
            }
            true
        }
        Committed::Failed(e) => {
            let reason = format!("journal commit failed: {e}");
            tracing::error!(%reason, "PostgreSQL commit failed; nothing is acknowledged from now on");
            shared.poison(reason.clone());
            for batch in group {
                shared.answer(batch, Err(StorageError::Backend(reason.clone())));
            }
            false
        }
    }
}

fn handover_error() -> StorageError {
    StorageError::Backend(
        "this process released its lease (drained) and another process took the database \
         over; it writes nothing more"
            .into(),
    )
}

/// After a hand-over: this process no longer runs the database's invocations, and every
/// write is refused, until the queue closes.
async fn handed_over(queue: mpsc::UnboundedReceiver<Message>, shared: &Shared) {
    tracing::info!(
        "another process took over the lease this one released; this one runs nothing more"
    );
    shared.set_owner(false);
    refuse_all(queue, shared, handover_error()).await
}

/// Answers whatever is queued with the failure, until the queue closes.
async fn refuse_all(
    mut queue: mpsc::UnboundedReceiver<Message>,
    shared: &Shared,
    error: StorageError,
) {
    while let Some(message) = queue.recv().await {
        match message {
            Message::Batch(batch) => shared.answer(batch, Err(error.clone())),
            Message::Release(_, ack) => {
                let _ = ack.send(Err(error.clone()));
            }
            Message::Close(ack) => {
                let _ = ack.send(());
                return;
            }
        }
    }
}

/// [`commit`] within the lease's length: a writer that cannot commit that long (cut off
/// from the database, which then lets another process take over) stops, rather than
/// running handlers whose effects another process repeats.
async fn committed(
    client: &Client,
    statements: &Statements,
    released: bool,
    ops: Vec<WriteOp>,
) -> Result<(), StorageError> {
    let patience = Duration::from_millis(statements.lease.ttl_ms as u64);
    tokio::time::timeout(patience, commit(client, statements, released, ops))
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Backend(format!(
                "no answer to a commit within the lease's {patience:?}: another process may \
                 take over"
            )))
        })
}

/// `try_join_all` sends every statement in order before any answer only up to 30 futures
/// (beyond, it may go on polling after a failure): a transaction is BEGIN, the fence, at
/// most one statement per kind a fold sends, a notification, and COMMIT.
const _: () = assert!(fold::ALL.len() + 4 <= 30);

/// One transaction for the whole group, in one round trip: `BEGIN`, every statement and
/// `COMMIT` are sent in order without waiting for answers (a cancel request, whose record is
/// read, changed and written back, splits it in two). A statement that fails aborts the
/// transaction, so the statements after it fail too and `COMMIT` ends it as a rollback:
/// the group is answered with the first error.
async fn commit(
    client: &Client,
    statements: &Statements,
    released: bool,
    ops: Vec<WriteOp>,
) -> Result<(), StorageError> {
    let done = pipeline(client, statements, released, ops).await;
    if done.is_err() {
        // Ends a transaction left open by a failure before the `COMMIT` was sent.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done
}

async fn pipeline(
    client: &Client,
    statements: &Statements,
    released: bool,
    ops: Vec<WriteOp>,
) -> Result<(), StorageError> {
    let lease = statements.lease;
    // A released lease is fenced all the same, but left expired (a negative length): any
    // other process may take it over between two transactions.
    let ttl_ms = if released { -1 } else { lease.ttl_ms };
    let mut pending: Vec<Step<'_>> = vec![
        (&statements.begin, Vec::new()),
        (
            &statements.fence,
            vec![Box::new(lease.epoch), Box::new(ttl_ms)],
        ),
    ];
    let mut folded = Fold::default();
    let mut finished = Vec::new();
    for op in ops {
        // A cancel request for a record stored before this group: what is folded so far is
        // written first, then the record is read, changed and written back.
        let Some(id) = folded.add(op)? else {
            continue;
        };
        finished.extend(folded.take_finished());
        push_folded(statements, std::mem::take(&mut folded), &mut pending);
        send(client, std::mem::take(&mut pending)).await?;
        request_cancel(client, statements, id.storage_key().to_vec()).await?;
    }
    finished.extend(folded.take_finished());
    push_folded(statements, folded, &mut pending);
    if !finished.is_empty() {
        let payloads = super::finished_payloads(&finished);
        pending.push((&statements.notify_finished, vec![Box::new(payloads)]));
    }
    pending.push((&statements.commit, Vec::new()));
    send(client, pending).await
}

fn push_folded<'a>(statements: &'a Statements, folded: Fold, out: &mut Vec<Step<'a>>) {
    for (sql, params) in folded.statements() {
        out.push((&statements.folded[sql], params));
    }
}

async fn send(client: &Client, steps: Vec<Step<'_>>) -> Result<(), StorageError> {
    // `try_join_all` polls the futures in order on its first poll, and each sends its
    // statement when first polled (its statement is prepared already): they reach the server
    // in the group's order, and their answers come back in that order.
    try_join_all(
        steps
            .into_iter()
            .map(|(statement, params)| client.execute_raw(statement, params)),
    )
    .await
    .map_err(|e| {
        StorageError::Backend(format!(
            "the transaction failed (if the connection was lost, its outcome is unknown; \
             recovery reads what landed): {}",
            pg_error(&e)
        ))
    })?;
    Ok(())
}

async fn request_cancel(
    client: &Client,
    statements: &Statements,
    key: Vec<u8>,
) -> Result<(), StorageError> {
    let Some(row) = client
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
    client
        .execute(&statements.put_record, &[&key, &records::encode(&record)])
        .await
        .map_err(backend)?;
    Ok(())
}

fn backend(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(pg_error(&e))
}

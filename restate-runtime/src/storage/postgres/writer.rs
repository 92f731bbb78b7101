//! The writer: one connection that commits queued batches in groups (group commit), one
//! transaction per group, its statements pipelined (sent before any answer is awaited, in
//! order), and answers each batch once the group's `COMMIT` returned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Statement};

use super::super::partitions::partition_of;
use super::super::records::{self, InvocationRecord, Status};
use super::super::{Partitions, Placement, StorageError, WriteOp, WriterStats};
use super::acceptances::{self, Claims};
use super::combined::{self, Combined, Part, Shape};
use super::fold::Fold;
use super::kill::Life;
use super::lookups::{Inbox, Lookup as _};
use super::ownership::{FENCED_STATE, Leases, LostDatabase};
use super::{Param, pg_error};
use crate::ids::InvocationId;

/// What the storage handle hands the writer.
pub(super) enum Message {
    Batch(Batch),
    /// Leave every held partition free from now on (`true`: a drained process lets others
    /// take over at once) or hold what is still this process's again (`false`); answered
    /// once the change committed.
    Release(bool, oneshot::Sender<Result<(), StorageError>>),
    /// The engine left these partitions, and what it wrote for them is decided: those being
    /// offered back are released.
    Left(Partitions),
    /// Commit everything queued before, then stop and say so.
    Close(std::sync::mpsc::Sender<()>),
}

pub(super) struct Batch {
    pub(super) ops: Vec<WriteOp>,
    pub(super) bytes: usize,
    /// A barrier's partition key ([`Storage::barrier`](crate::storage::Storage::barrier)):
    /// fenced as if the batch wrote it.
    pub(super) barrier_on: Option<u64>,
    /// New invocations of the batch that its transaction places
    /// ([`Storage::submit_placing`](crate::storage::Storage::submit_placing)).
    pub(super) placements: Vec<Arc<Placement>>,
    pub(super) done: oneshot::Sender<Result<(), StorageError>>,
}

impl Batch {
    /// The partitions it is fenced on: those it writes (an inbox row is anyone's to add, and
    /// one applied is deleted with the effects it had), and the one it is fenced on besides.
    fn fenced(&self, count: u32) -> BTreeSet<u32> {
        let mut fenced = self.written(count);
        fenced.extend(self.barrier_on.and_then(|key| partition_of(key, count)));
        fenced
    }

    /// The partitions it writes: those that its refusal takes out of this process's hands
    /// (not one it is only fenced on, of which it wrote nothing).
    fn written(&self, count: u32) -> BTreeSet<u32> {
        self.ops
            .iter()
            .filter_map(WriteOp::partition_key)
            .filter_map(|key| partition_of(key, count))
            .collect()
    }
}

/// Shared by the storage handle and its writer.
pub(super) struct Shared {
    pub(super) failure: watch::Sender<Option<String>>,
    pub(super) stats: Mutex<WriterStats>,
    /// Bytes submitted and not yet answered.
    pub(super) queued: AtomicUsize,
    /// Batches submitted and reads asked (`Unanswered`) and not yet answered.
    pub(super) unanswered: AtomicUsize,
    /// Closed: writes are refused, and the writer's connection may end.
    pub(super) closed: AtomicBool,
    /// This process takes part in running the database's partitions (it was not handed over,
    /// and no binary of schema 2 holds the database).
    pub(super) owner: watch::Sender<bool>,
    /// The partitions it runs.
    pub(super) owned: watch::Sender<Partitions>,
    /// Until when its leases may be taken for held (see [`Storage::lease_clock`]).
    pub(super) held_until: watch::Sender<Option<Duration>>,
    /// Under a test's kill switch: once it has ended, nothing more commits.
    pub(super) life: Option<Life>,
    /// New invocations whose first commit claims their id against forwarded requests.
    pub(super) acceptances: super::acceptances::Acceptances,
    /// Awaited before the next transaction that places sends (for tests of what happens
    /// between their queueing and their commit's read of the inbox).
    #[cfg(test)]
    pub(super) before_placing: Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl Shared {
    /// Answers a batch and takes it off the queue counts.
    pub(super) fn answer(&self, batch: Batch, result: Result<(), StorageError>) {
        for placement in &batch.placements {
            placement.settle(result.is_ok());
        }
        self.queued.fetch_sub(batch.bytes, Ordering::Relaxed);
        let _ = batch.done.send(result);
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
    }

    /// Tells the engine what the leases now are.
    pub(super) fn publish(&self, leases: &mut Leases) {
        let running = leases.running();
        self.owned.send_if_modified(|owned| {
            let changed = *owned != running;
            *owned = running;
            changed
        });
        let member = leases.member();
        self.owner
            .send_if_modified(|owner| std::mem::replace(owner, member) != member);
        // After the set: a step waiting for the leases to be confirmed finds its partition
        // gone, not held again.
        let until = leases.held_until();
        self.held_until
            .send_if_modified(|held| std::mem::replace(held, until) != until);
    }

    /// From now on nothing is acknowledged (law 10).
    pub(super) fn poison(&self, reason: String) {
        // The first reason stays; only it wakes the watchers.
        self.failure.send_if_modified(|failure| {
            let first = failure.is_none();
            failure.get_or_insert(reason);
            first
        });
    }

    /// Why nothing is acknowledged any more, if so. A kill is seen here, at once: no
    /// transaction begins after it.
    pub(super) fn poisoned(&self) -> Option<String> {
        if self.dead() {
            self.poison("the store's process was killed".into());
        }
        self.failure.borrow().clone()
    }

    /// A test's kill switch has killed this store.
    pub(super) fn dead(&self) -> bool {
        self.life.as_ref().is_some_and(Life::ended)
    }

    /// Returns once a test's kill switch has killed this store; never without one.
    pub(super) async fn killed(&self) {
        match &self.life {
            Some(life) => life.end().await,
            None => std::future::pending().await,
        }
    }
}

/// A record read and rewritten in the writer's transaction: a cancellation requested of an
/// invocation that is not in memory.
pub(super) const READ_RECORD: &str = "SELECT record FROM restate_invocations WHERE id = $1";
pub(super) const PUT_RECORD: &str = "UPDATE restate_invocations SET record = $2 WHERE id = $1";

/// The statements the writer runs, prepared on its connection: the fixed ones at its start,
/// a group's combined statements at the first group of their shape.
struct Statements {
    begin: Statement,
    commit: Statement,
    read_record: Statement,
    put_record: Statement,
    /// Whether messages wait in the inbox for the keys of a group's placements.
    inbox_check: Statement,
    /// A group's claims of new invocations' ids, and their removal ([`super::acceptances`]).
    claim: Statement,
    unclaim: Statement,
    /// [`combined`] statements, by their shape.
    combined: HashMap<Shape, Statement>,
}

/// Shapes kept prepared at most; a new one past it (a workload of ever new mixes, which has not
/// been seen) takes the place of another rather than grow the session without bound.
const MAX_SHAPES: usize = 512;

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            begin: client.prepare("BEGIN").await?,
            commit: client.prepare("COMMIT").await?,
            read_record: client.prepare(READ_RECORD).await?,
            put_record: client.prepare(PUT_RECORD).await?,
            inbox_check: client.prepare(Inbox::SQL).await?,
            claim: client.prepare(acceptances::CLAIM).await?,
            unclaim: client.prepare(acceptances::UNCLAIM).await?,
            combined: HashMap::new(),
        })
    }

    /// The steps that send these statements, each prepared at the first use of its shape.
    async fn steps(
        &mut self,
        client: &Client,
        statements: Vec<Combined>,
    ) -> Result<Vec<Step>, Refused> {
        let mut steps = Vec::with_capacity(statements.len());
        for combined in statements {
            let shape = combined.shape();
            let statement = match self.combined.get(&shape) {
                Some(statement) => statement.clone(),
                None => {
                    let sql = combined::statement(shape);
                    let statement =
                        (client.prepare(&sql).await).map_err(|e| Refused::Failed(pg_error(&e)))?;
                    if self.combined.len() >= MAX_SHAPES
                        && let Some(old) = self.combined.keys().next().copied()
                    {
                        self.combined.remove(&old);
                    }
                    self.combined.insert(shape, statement.clone());
                    statement
                }
            };
            steps.push((statement, combined.into_params()));
        }
        Ok(steps)
    }
}

/// One statement of a group, with its parameters owned so that it can be sent before the
/// statements ahead of it are answered.
type Step = (Statement, Vec<Param>);

/// Runs until the queue closes or a commit fails: commits groups, and runs a lease round
/// every third of the lease's length (more often once released, to see the hand-over), and
/// one at once when `released` says another process released partitions (a drain, or
/// partitions offered back), so that they are taken over at once, not at the next round.
pub(super) async fn run(
    client: Client,
    mut queue: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    max_group_bytes: usize,
    mut leases: Leases,
    mut released: watch::Receiver<u64>,
) {
    let mut statements = match Statements::prepare(&client).await {
        Ok(statements) => statements,
        Err(e) => {
            let reason = format!("preparing the writer's statements failed: {}", pg_error(&e));
            shared.poison(reason.clone());
            return refuse_all(queue, &shared, StorageError::Poisoned(reason)).await;
        }
    };
    let mut next_round = Instant::now() + leases.next_round_in();
    let mut closing = None;
    while closing.is_none() {
        if Instant::now() >= next_round {
            if shared.poisoned().is_none() {
                lease_round(&client, &mut leases, &shared).await;
            }
            next_round = Instant::now() + leases.next_round_in();
            if leases.handed_over() {
                return handed_over(queue, &shared).await;
            }
        }
        let first = tokio::select! {
            // First: under a steady queue the notification still gets its round.
            biased;
            Ok(()) = released.changed() => {
                next_round = Instant::now();
                continue;
            }
            first = tokio::time::timeout_at(next_round.into(), queue.recv()) => match first {
                Ok(Some(first)) => first,
                Ok(None) => return,
                Err(_due) => continue,
            },
        };
        let mut group = Vec::new();
        let mut control = None;
        match first {
            Message::Batch(batch) => group.push(batch),
            Message::Close(ack) => closing = Some(ack),
            other => control = Some(other),
        }
        let mut bytes = group.first().map_or(0, |b| b.bytes);
        while closing.is_none() && control.is_none() && bytes < max_group_bytes {
            match queue.try_recv() {
                Ok(Message::Batch(batch)) => {
                    bytes += batch.bytes;
                    group.push(batch);
                }
                Ok(Message::Close(ack)) => closing = Some(ack),
                Ok(other) => control = Some(other),
                Err(_) => break,
            }
        }
        // The batches before a change of the leases commit with the leases as they were.
        if !group.is_empty() {
            let fenced = commit_group(&client, &mut statements, &mut leases, group, &shared).await;
            if fenced {
                // What else moved (the whole database, to an older binary?) is seen at once.
                next_round = Instant::now();
            }
        }
        if leases.handed_over() {
            if let Some(Message::Release(_, ack)) = control {
                let _ = ack.send(Err(handover_error()));
            }
            if let Some(ack) = closing {
                // Closing: nothing more comes to refuse.
                let _ = ack.send(());
                return;
            }
            return handed_over(queue, &shared).await;
        }
        match control {
            Some(Message::Release(on, ack)) => {
                let _ = ack.send(change_release(&client, &mut leases, &shared, on).await);
                if leases.handed_over() {
                    return handed_over(queue, &shared).await;
                }
                next_round = next_round.min(Instant::now() + leases.next_round_in());
            }
            Some(Message::Left(partitions)) if shared.poisoned().is_none() => {
                let ttl = leases.ttl();
                let left = patiently(ttl, leases.left(&client, &partitions)).await;
                if let Err(e) = left.unwrap_or_else(|| Err("no answer in time".into())) {
                    fail(&shared, format!("releasing partitions failed: {e}"));
                }
                shared.publish(&mut leases);
            }
            _ => {}
        }
    }
    if let Some(ack) = closing {
        let _ = ack.send(());
    }
}

/// A lease round; what it finds is published (a partition taken from this process leaves
/// its set), and the whole database taken by an older binary stops the store.
async fn lease_round(client: &Client, leases: &mut Leases, shared: &Shared) {
    let ttl = leases.ttl();
    let round = patiently(ttl, leases.round(client)).await;
    match round.unwrap_or_else(|| Err(format!("no answer within the lease's {ttl:?}, twice"))) {
        Ok(Ok(())) => shared.publish(leases),
        Ok(Err(LostDatabase)) => fail(
            shared,
            "fenced: a process of an older binary (schema 2) took the whole database over".into(),
        ),
        Err(e) => fail(shared, format!("renewing the leases failed: {e}")),
    }
}

/// A drain's release (`true`) or an undrain's hold (`false`).
async fn change_release(
    client: &Client,
    leases: &mut Leases,
    shared: &Shared,
    on: bool,
) -> Result<(), StorageError> {
    if let Some(reason) = shared.poisoned() {
        return Err(StorageError::Poisoned(reason));
    }
    let changed = patiently(leases.ttl(), leases.release(client, on)).await;
    match changed.unwrap_or_else(|| Err("no answer within the lease's length, twice".into())) {
        Ok(()) if leases.handed_over() => {
            // Known before the undrain that asked is told.
            shared.publish(leases);
            Err(handover_error())
        }
        Ok(()) => {
            shared.publish(leases);
            Ok(())
        }
        Err(e) => {
            let reason = format!("changing the leases failed: {e}");
            fail(shared, reason.clone());
            Err(StorageError::Poisoned(reason))
        }
    }
}

/// Stops the store: nothing is acknowledged from now on.
fn fail(shared: &Shared, reason: String) {
    tracing::error!(%reason, "nothing is acknowledged from now on");
    shared.poison(reason);
}

/// Why a transaction failed.
enum Refused {
    /// The fence refused it: another process holds these partitions now.
    Fenced(Vec<u32>),
    /// Any other failure: nothing may be acknowledged from now on (law 10).
    Failed(String),
}

impl From<StorageError> for Refused {
    fn from(e: StorageError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Commits one group and answers its batches. A batch for a partition this process does not
/// hold (offered back and released, lost, or handed over) is refused before anything is
/// sent; a group the fence refuses drops the partitions found taken (`true`), refuses the
/// batches that write them, and commits the rest again. Whatever is refused for a partition
/// another process has takes the other partitions it wrote out of this process's hands too
/// (frozen: no write of them commits any more, and they are offered back): the refused write
/// may have been all that their invocations had of it, and whoever takes them next recovers
/// those from the store.
async fn commit_group(
    client: &Client,
    statements: &mut Statements,
    leases: &mut Leases,
    group: Vec<Batch>,
    shared: &Shared,
) -> bool {
    if let Some(reason) = shared.poisoned() {
        for batch in group {
            shared.answer(batch, Err(StorageError::Poisoned(reason.clone())));
        }
        return false;
    }
    let (mut kept, mut fence) = admit(leases, group, shared);
    let mut fenced = false;
    // A retry's batches were all admitted with the group, each before any refused batch
    // that wrote its partitions: those frozen since are still theirs to write.
    while let Some((rest, lost)) =
        commit_once(client, statements, leases, kept, &fence, shared).await
    {
        fenced = true;
        // Only the partitions taken leave the fence: one frozen by a refused batch is still
        // held, and a batch before that one may write it (it commits only while still held).
        fence.retain(|p, _| !lost.contains(p));
        kept = rest;
    }
    fenced
}

/// A batch admitted to a transaction, with the partitions it writes.
type Admitted = (Batch, BTreeSet<u32>);

/// The batches of a group that may be written, each with the partitions it writes, and the
/// epochs to fence them on; a batch for a partition this process may not write now is
/// refused, and the partitions it wrote are frozen.
fn admit(
    leases: &mut Leases,
    group: Vec<Batch>,
    shared: &Shared,
) -> (Vec<Admitted>, BTreeMap<u32, i64>) {
    let count = leases.count();
    let mut fence = BTreeMap::new();
    let mut kept = Vec::with_capacity(group.len());
    let mut refused = Vec::new();
    for batch in group {
        let touched = batch.fenced(count);
        let epochs: Option<Vec<(u32, i64)>> = touched
            .iter()
            .map(|p| leases.epoch(*p).map(|e| (*p, e)))
            .collect();
        match epochs {
            Some(epochs) => {
                fence.extend(epochs);
                kept.push((batch, touched));
            }
            None => {
                leases.freeze(batch.written(count));
                refused.push((batch, touched));
            }
        }
    }
    if !refused.is_empty() {
        // Known before the refused hear of it.
        shared.publish(leases);
        for (batch, touched) in refused {
            shared.answer(batch, Err(moved_error(&touched, leases)));
        }
    }
    (kept, fence)
}

/// One transaction of [`commit_group`]: what is to be tried again after a fence refused it,
/// with the partitions the fence found taken.
async fn commit_once(
    client: &Client,
    statements: &mut Statements,
    leases: &mut Leases,
    kept: Vec<Admitted>,
    fence: &BTreeMap<u32, i64>,
    shared: &Shared,
) -> Option<(Vec<Admitted>, BTreeSet<u32>)> {
    if kept.iter().all(|(batch, _)| batch.ops.is_empty()) {
        // Nothing to write: everything queued before has committed already, or was refused
        // with its partitions frozen (a barrier on one of those was refused above).
        for (batch, _) in kept {
            shared.answer(batch, Ok(()));
        }
        return None;
    }
    let started = Instant::now();
    // Copied (a memcpy of the group's bytes, next to a round trip to the database): a group
    // the fence refuses is committed again without the batches of the partitions taken.
    let ops: Vec<WriteOp> = kept
        .iter()
        .flat_map(|(b, _)| b.ops.iter().cloned())
        .collect();
    let placements: Vec<_> = (kept.iter())
        .flat_map(|(b, _)| b.placements.iter().cloned())
        .collect();
    #[cfg(test)]
    if !placements.is_empty() {
        let step = shared.before_placing.lock().expect("hook lock").take();
        if let Some(step) = step {
            step.await;
        }
    }
    let claims = shared.acceptances.take(&ops);
    let done = committed(
        client,
        statements,
        leases.ttl(),
        fence,
        ops,
        &placements,
        &claims,
    )
    .await;
    match done {
        Ok(claimed) => {
            // Before the answers: a creator reads its verdict once its batch is answered.
            acceptances::settle(&claims, &claimed);
            let mut stats = shared.stats.lock().expect("stats lock");
            stats.commits += 1;
            stats.batches += kept.len() as u64;
            stats.bytes += kept.iter().map(|(b, _)| b.bytes as u64).sum::<u64>();
            stats.commit_micros += started.elapsed().as_micros() as u64;
            stats.commit_latency.observe(started.elapsed());
            drop(stats);
            if let Some(life) = &shared.life {
                life.committed();
            }
            for (batch, _) in kept {
                shared.answer(batch, Ok(()));
            }
            None
        }
        Err(Refused::Fenced(partitions)) if leases.released() => {
            // Drained and released: others take the partitions over, which is no failure.
            // The whole group is refused, so every partition it wrote is frozen: a later
            // write there (the same invocation's next one, the removal of the inbox message
            // that took it in) must not commit without the refused one.
            leases.handed(|p| partitions.contains(&p));
            let count = leases.count();
            leases.freeze(kept.iter().flat_map(|(batch, _)| batch.written(count)));
            shared.publish(leases);
            for (batch, _) in kept {
                shared.answer(batch, Err(handover_error()));
            }
            None
        }
        Err(Refused::Fenced(lost)) => {
            // Those partitions are dropped; a batch that writes one is refused, and so, in
            // order, is every later batch that writes a partition a refused one wrote (it may
            // be the same invocation's next write), frozen from now on. The rest, barriers
            // included, are committed again in their order.
            leases.lose(&lost);
            let mut spoiled: BTreeSet<u32> = lost.iter().copied().collect();
            let mut again = Vec::with_capacity(kept.len());
            let refusal = StorageError::Backend(format!(
                "fenced: another process has taken over partitions {lost:?} this one held (it \
                 was paused or cut off longer than its lease): nothing was written"
            ));
            let mut refused = Vec::new();
            for (batch, touched) in kept {
                if touched.is_disjoint(&spoiled) {
                    again.push((batch, touched));
                    continue;
                }
                spoiled.extend(batch.written(leases.count()));
                refused.push(batch);
            }
            leases.freeze(spoiled.iter().copied());
            shared.publish(leases);
            shared.acceptances.give_back(claims);
            for batch in refused {
                shared.answer(batch, Err(refusal.clone()));
            }
            Some((again, lost.iter().copied().collect()))
        }
        Err(Refused::Failed(e)) => {
            let reason = format!("journal commit failed: {e}");
            tracing::error!(%reason, "PostgreSQL commit failed; nothing is acknowledged from now on");
            shared.poison(reason.clone());
            for (batch, _) in kept {
                shared.answer(batch, Err(StorageError::Backend(reason.clone())));
            }
            None
        }
    }
}

/// What a batch for a partition this process does not hold is told.
fn moved_error(partitions: &BTreeSet<u32>, leases: &Leases) -> StorageError {
    if leases.handed_over() {
        return handover_error();
    }
    StorageError::Backend(format!(
        "partitions {partitions:?} are not this process's (they moved to another process): \
         nothing was written"
    ))
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
        "other processes took over the partitions this one released; this one runs nothing more"
    );
    shared
        .owned
        .send_modify(|owned| *owned = Partitions::none(owned.count()));
    shared.owner.send_replace(false);
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
            Message::Left(_) => {}
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
    statements: &mut Statements,
    patience: Duration,
    fence: &BTreeMap<u32, i64>,
    ops: Vec<WriteOp>,
    placements: &[Arc<Placement>],
    claims: &Claims,
) -> Result<Claimed, Refused> {
    patiently(
        patience,
        commit(client, statements, fence, ops, placements, claims),
    )
    .await
    .unwrap_or_else(|| {
        Err(Refused::Failed(format!(
            "no answer to a commit within the lease's {patience:?}, twice: another \
                 process may take over"
        )))
    })
}

/// `work`'s answer if it comes within `patience`, or within as long again from then on: a
/// process paused (SIGSTOP, a stall) past `patience` sees its timers fire as it is continued,
/// while the database's answer already waits in its socket, and must not take that for a
/// database that stopped answering (then it gives up after twice `patience`).
async fn patiently<T>(patience: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    let mut work = std::pin::pin!(work);
    if let Ok(done) = tokio::time::timeout(patience, &mut work).await {
        return Some(done);
    }
    tokio::time::timeout(patience, work).await.ok()
}

/// One transaction for the whole group, in one round trip. A group that reads nothing before
/// it is written (no placements, no cancel request for a stored record) and fits one statement
/// (see [`combined`]) is that statement alone, its own transaction. Otherwise `BEGIN`, the
/// statements and `COMMIT` are sent in order without waiting for answers (a read splits
/// them). A statement that fails aborts the transaction, so the statements after it fail too
/// and `COMMIT` ends it as a rollback: the group is answered with the first error.
async fn commit(
    client: &Client,
    statements: &mut Statements,
    fence: &BTreeMap<u32, i64>,
    ops: Vec<WriteOp>,
    placements: &[Arc<Placement>],
    claims: &Claims,
) -> Result<Claimed, Refused> {
    let done = pipeline(client, statements, fence, ops, placements, claims).await;
    if done.is_err() {
        // Ends a transaction left open by a failure before the `COMMIT` was sent.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done
}

async fn pipeline(
    client: &Client,
    statements: &mut Statements,
    fence: &BTreeMap<u32, i64>,
    mut ops: Vec<WriteOp>,
    placements: &[Arc<Placement>],
    claims: &Claims,
) -> Result<Claimed, Refused> {
    let mut fenced = Combined::default();
    if !fence.is_empty() {
        let (partitions, epochs): (Vec<i32>, Vec<i64>) =
            fence.iter().map(|(p, e)| (*p as i32, *e)).unzip();
        fenced.push(Part::Fence, vec![Box::new(partitions), Box::new(epochs)]);
    }
    if placements.is_empty() && claims.is_empty() {
        transaction(client, statements, true, fenced, fold(ops)?).await?;
        return Ok(Claimed::default());
    }
    let mut begun = vec![(statements.begin.clone(), Vec::new())];
    if !fenced.is_empty() {
        begun.extend(statements.steps(client, vec![fenced]).await?);
    }
    // Sent after the fence, without waiting for it: the group waits one round trip.
    let begun = send(client, begun);
    let placed = async {
        match placements.is_empty() {
            true => Ok(()),
            false => place(client, statements, &mut ops, placements).await,
        }
    };
    let claim = (&statements.claim, &statements.unclaim);
    let claimed = acceptances::claim(client, claim, claims);
    let (begun, placed, claimed) = futures::join!(begun, placed, claimed);
    begun?;
    placed?;
    let claimed = claimed.map_err(Refused::Failed)?;
    let folds = fold(ops)?;
    transaction(client, statements, false, Combined::default(), folds).await?;
    Ok(claimed)
}

/// The ids a group claimed ([`acceptances::claim`]).
type Claimed = std::collections::HashSet<Vec<u8>>;

/// A group's operations folded: each fold ends before a cancel request for a record stored
/// before the group (returned with it), which is applied on its own.
fn fold(ops: Vec<WriteOp>) -> Result<Vec<(Fold, Option<InvocationId>)>, Refused> {
    let mut folds = Vec::new();
    let mut folded = Fold::default();
    for op in ops {
        if let Some(id) = folded.add(op)? {
            folds.push((std::mem::take(&mut folded), Some(id)));
        }
    }
    folds.push((folded, None));
    Ok(folds)
}

/// A group's transaction, from its `BEGIN` (`begin`) or from after it (sent already):
/// `first`'s parts go with the first fold's statements, each cancel request's record is read
/// and written back after the statements before it, and the notification of the invocations
/// finished goes with the last statement. A group that reads nothing and is one statement is
/// that statement alone, its own transaction.
async fn transaction(
    client: &Client,
    statements: &mut Statements,
    begin: bool,
    mut first: Combined,
    mut folds: Vec<(Fold, Option<InvocationId>)>,
) -> Result<(), Refused> {
    let finished: Vec<InvocationId> = (folds.iter_mut())
        .flat_map(|(folded, _)| folded.take_finished())
        .collect();
    // The last fold ends no cancel request: one fold, none.
    let reads_nothing = folds.len() == 1;
    let mut pending = Vec::new();
    if begin {
        pending.push((statements.begin.clone(), Vec::new()));
    }
    let last = folds.len() - 1;
    for (n, (folded, cancel)) in folds.into_iter().enumerate() {
        let mut combined = folded.statements(std::mem::take(&mut first));
        if n == last {
            notify(&mut combined, &finished);
        }
        let steps = statements.steps(client, combined).await?;
        if begin && reads_nothing && steps.len() == 1 {
            return send(client, steps).await;
        }
        pending.extend(steps);
        if let Some(id) = cancel {
            send(client, std::mem::take(&mut pending)).await?;
            request_cancel(client, statements, id.storage_key().to_vec()).await?;
        }
    }
    pending.push((statements.commit.clone(), Vec::new()));
    send(client, pending).await
}

/// The notification of the invocations finished, added to the last statement.
fn notify(combined: &mut Vec<Combined>, finished: &[InvocationId]) {
    if finished.is_empty() {
        return;
    }
    if combined.is_empty() {
        combined.push(Combined::default());
    }
    let payloads = super::finished_payloads(finished);
    let last = combined.last_mut().expect("one statement at least");
    last.push(Part::NotifyFinished, vec![Box::new(payloads)]);
}

/// Decides the group's placements inside its transaction
/// ([`placement::decide`](crate::storage::placement::decide)): whether messages wait in the
/// inbox for their keys is read now, so every message committed before is seen.
async fn place(
    client: &Client,
    statements: &Statements,
    ops: &mut [WriteOp],
    placements: &[Arc<Placement>],
) -> Result<(), Refused> {
    let ids: Vec<InvocationId> = placements.iter().map(|p| p.id()).collect();
    let params = Inbox::params(ids.iter().collect());
    let failed = |e: tokio_postgres::Error| Refused::Failed(pg_error(&e));
    let rows = (client.query_raw(&statements.inbox_check, params).await).map_err(failed)?;
    let rows: Vec<tokio_postgres::Row> = futures::TryStreamExt::try_collect(rows)
        .await
        .map_err(failed)?;
    if rows.len() != placements.len() {
        return Err(Refused::Failed(format!(
            "the placements' inbox check answered {} rows for {}",
            rows.len(),
            placements.len()
        )));
    }
    let waiting = (rows.iter())
        .map(|row| Inbox::answer(row).map(|pending| pending.partition))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Refused::Failed(e.to_string()))?;
    crate::storage::placement::decide(placements, &waiting, ops)?;
    Ok(())
}

/// Sends the steps in order without waiting for answers. `try_join_all` polls the futures in
/// order on its first poll, and each sends its statement when first polled (its statement is
/// prepared already): they reach the server in the group's order, and their answers come
/// back in that order. (It does so for at most 30 futures: a group sends at most `BEGIN`, the
/// fence, two statements and `COMMIT` at a time.)
async fn send(client: &Client, steps: Vec<Step>) -> Result<(), Refused> {
    try_join_all(
        (steps.into_iter())
            .map(|(statement, params)| async move { client.execute_raw(&statement, params).await }),
    )
    .await
    .map_err(|e| {
        let fenced = e
            .as_db_error()
            .filter(|db| db.code().code() == FENCED_STATE);
        let taken: Vec<u32> = fenced
            .and_then(|db| db.detail())
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        match fenced {
            // Naming no partition (a proxy rewrote the message?), it cannot be acted on.
            Some(_) if !taken.is_empty() => Refused::Fenced(taken),
            _ => Refused::Failed(format!(
                "the transaction failed (if the connection was lost, its outcome is unknown; \
                 recovery reads what landed): {}",
                pg_error(&e)
            )),
        }
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

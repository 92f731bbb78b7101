//! Serving without running: on a shared database, a process that does not run the
//! invocations yet (it waits for the lease) still serves every request. What it accepts is
//! forwarded durably into the owner's inbox before it answers, and results are read from the
//! store, woken by the owner's notifications. The owner applies its inbox in arrival order
//! ([`apply_inbox`]) and removes each message once its effect is durable.
//!
//! A handler's one-way send to a key that runs here is placed by the commit of its entry
//! ([`Placement`](crate::storage::Placement)): queued on its key at once, it runs from there,
//! or, put behind its key's messages in the inbox, leaves memory and is taken in again from
//! there ([`Engine::leave_for_inbox`], `adopt`). A message taken in while such sends wait on
//! its key overtakes them ([`Engine::overtake_placements`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, join_all};

use super::wake::Completion;
use super::{
    Completed, Engine, EngineError, Inflight, InvokeRequest, Journal, Prepared, SendStatus,
};
use crate::ids::InvocationId;
use crate::maps::FastMap;
use crate::storage::{
    CommitWaiter, FinishedWatch, Forwarded, Inbound, InboxMessage, InvocationRecord, JournalEntry,
    Outcome, Peer, Peers, ResultWaiter, Status, Target, WriteOp,
};

/// What a forwarded invocation became when taken in.
enum Adoption {
    /// New here: to be launched, and made durable.
    New(Arc<Inflight>, Option<u64>),
    /// Its record is (or is being) written: this resolves once it is durable.
    Durable(CommitWaiter),
    /// Ended at once (its target is unknown here), its caller told.
    Ended(super::wake::PendingWake),
    /// Stored already: nothing to do.
    Done,
}

/// Messages applied in one round at most (their records commit together), and the bytes
/// after which a round takes no more.
const INBOX_PAGE: usize = 1_000;
const INBOX_PAGE_BYTES: usize = 8 << 20;

/// How long an invocation a relay made keeps its result at least, and how old a relay may be
/// when it arrives: the relay's retry through the inbox, or a relay message sent again, finds
/// the invocation and never creates it a second time. One the retry made first has its
/// handler's retention: the relay it stands for was cut off before its handler at the owner
/// submitted anything (the owner's server drops a request's handler when its connection
/// closes), or refused there.
pub(crate) const RELAYED_RETENTION: Duration = Duration::from_secs(300);

/// Where [`Engine::relay_target`] sends a call: the id it gets, the process that runs its
/// partition, and the table that says when that changes.
pub(crate) struct RelayTo {
    pub id: InvocationId,
    pub peer: Peer,
    pub peers: Peers,
}

/// How long the inbox waits before looking again while the process is too busy to take it.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// How often waits on the store look again without a notification (one lost with a
/// connection, or a database that delivers none).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How far a waiter's fallback poll backs off.
const MAX_POLL: Duration = Duration::from_secs(30);

impl Engine {
    /// Request-response through the owner: the invocation is forwarded, then its result
    /// awaited in the store.
    pub(super) async fn call_forwarded(
        &self,
        req: InvokeRequest,
        idle: impl FnOnce(),
    ) -> Result<(InvocationId, Arc<Completed>, bool), EngineError> {
        let Prepared {
            id,
            record,
            workflow_run,
            ..
        } = self.prepare(req, None)?;
        // Watched before it is forwarded, so its end cannot come unseen.
        let finished = self.watch_finished(id);
        let forwarded = self
            .storage
            .forward(id, InboxMessage::Invoke(Box::new(record)))
            .await?;
        let duplicate = forwarded == Forwarded::Duplicate;
        if workflow_run && duplicate {
            return Err(EngineError::WorkflowAlreadyInvoked);
        }
        // Its owner runs it: nothing of it runs here, unless this process is the owner (the
        // call went through its own inbox, behind a message for its key).
        if !self.runs(&id) {
            idle();
        }
        match self.wait_stored_with(id, finished, duplicate).await? {
            Some(done) => Ok((id, done, duplicate)),
            None => Err(EngineError::Lost("the invocation was purged".into())),
        }
    }

    /// Where a request-response call from outside is best relayed: the process that runs its
    /// partition, when that is another one that advertised its ingress, with the id the call
    /// gets there ([`InvokeRequest::relayed`]). Whatever becomes of the relay, the call may
    /// go through the inbox under that id afterwards: an invocation of it is created once,
    /// by whichever comes first (the inbox's adoption and a submission of a given id both
    /// find one that exists). Not a workflow's run, whose duplicate is a conflict, nor a
    /// delayed call.
    pub(crate) fn relay_target(&self, req: &InvokeRequest) -> Option<RelayTo> {
        if !self.shared_store || req.delay.is_some() || req.relayed.is_some() {
            return None;
        }
        // A fresh unkeyed call is made in a partition of this process, if it runs any.
        if req.target.key.is_none() && req.idempotency_key.is_none() && self.runs_invocations() {
            return None;
        }
        let peers = self.storage.peers()?;
        let (_, handler) = self.resolve(&req.target).ok()?;
        if handler.kind == crate::registry::HandlerKind::Workflow {
            return None;
        }
        let id = self.id_for(req, false, self.now_ms());
        if self.runs(&id) {
            return None;
        }
        let peer = peers.route(id.partition_key())?;
        Some(RelayTo { id, peer, peers })
    }

    /// One-way through the owner: answers once the message is in its inbox.
    pub(super) async fn send_forwarded(
        &self,
        req: InvokeRequest,
    ) -> Result<(InvocationId, SendStatus, Option<u64>), EngineError> {
        let Prepared {
            id,
            record,
            execution_time_ms,
            ..
        } = self.prepare(req, None)?;
        let status = match self
            .storage
            .forward(id, InboxMessage::Invoke(Box::new(record)))
            .await?
        {
            Forwarded::New => SendStatus::Accepted,
            Forwarded::Duplicate => SendStatus::PreviouslyAccepted,
        };
        Ok((id, status, execution_time_ms))
    }

    /// Hands a message for `id` to the owner.
    pub(super) async fn forward_message(
        &self,
        id: InvocationId,
        message: InboxMessage,
    ) -> Result<(), EngineError> {
        self.storage.forward(id, message).await?;
        Ok(())
    }

    /// Whether work for `id` must go through the inbox even here, where invocations run:
    /// always at a standby; at the owner while an inbox holds a message that starts `id` or
    /// one for its key (accepted first elsewhere: its order and its answer come first), or
    /// while `id` is a send being placed.
    pub(super) async fn behind_inbox(&self, id: &InvocationId) -> Result<bool, EngineError> {
        if !self.shared_store {
            return Ok(false);
        }
        // A send whose commit is placing it, here or behind its key's messages: the request
        // follows it either way.
        if !self.runs(id) || self.placing(id) {
            return Ok(true);
        }
        let pending = self.storage.inbox_pending_async(id).await?;
        Ok(pending.starts || pending.partition)
    }

    /// [`Self::behind_inbox`] for a request from outside; only keyed and idempotent work
    /// can be behind a message (a fresh unkeyed invocation is new everywhere).
    pub(super) async fn request_behind_inbox(
        &self,
        req: &InvokeRequest,
    ) -> Result<bool, EngineError> {
        if !self.shared_store
            || (self.runs_invocations()
                && req.target.key.is_none()
                && req.idempotency_key.is_none()
                && req.relayed.is_none())
        {
            return Ok(false);
        }
        let (_, handler) = self.resolve(&req.target)?;
        let workflow_run = handler.kind == crate::registry::HandlerKind::Workflow;
        let id = self.id_for(req, workflow_run, self.now_ms());
        self.behind_inbox(&id).await
    }

    /// Waits until the store holds `id`'s result; `None` once neither the store nor an inbox
    /// knows `id`.
    pub(super) async fn wait_stored(
        &self,
        id: InvocationId,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        self.wait_stored_with(id, self.watch_finished(id), true)
            .await
    }

    /// A watch on `id`'s end in another process (`None` on a store of one process).
    fn watch_finished(&self, id: InvocationId) -> Option<FinishedWatch> {
        self.storage.signals().map(|s| s.finished.watch(id))
    }

    /// [`Self::wait_stored`] with a watch taken before `id` was forwarded. Without `look`,
    /// the store is read first once a notification (or the fallback poll) says it may hold
    /// the result: a new invocation has none yet.
    async fn wait_stored_with(
        &self,
        id: InvocationId,
        mut finished: Option<FinishedWatch>,
        mut look: bool,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        let mut shutdown = self.shutdown_signal();
        // The poll backs off: notifications name the result, and a lost connection wakes
        // every waiter; the poll is for a database that delivers none.
        let mut poll = FALLBACK_POLL;
        loop {
            if look && let Some(outcome) = self.stored_outcome(id, finished.as_mut()).await? {
                return Ok(outcome);
            }
            look = true;
            let notified = async {
                match finished.as_mut() {
                    Some(finished) => finished.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(poll) => poll = (poll * 2).min(MAX_POLL),
                // Durable in the store or an inbox: it goes on in whichever process runs it.
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(EngineError::Unfinished {
                        id,
                        reason: "the process is shutting down".into(),
                    });
                }
            }
        }
    }

    /// `id`'s result from the store: `Some(None)` when neither the store nor an inbox knows
    /// `id`, `None` while it is on its way.
    async fn stored_outcome(
        &self,
        id: InvocationId,
        finished: Option<&mut FinishedWatch>,
    ) -> Result<Option<Option<Arc<Completed>>>, EngineError> {
        // Seen before the reads: a result committed after them wakes the watch again.
        if let Some(finished) = finished {
            finished.seen();
        }
        if let Some(record) = self.storage.invocation_async(&id).await? {
            return Ok(super::completion(record).map(Some));
        }
        // Not stored: on its way while an inbox holds it. Its message is removed only after
        // its record is stored, so once the message is gone a second read finds the record.
        if self.storage.inbox_pending_async(&id).await?.starts {
            return Ok(None);
        }
        Ok(match self.storage.invocation_async(&id).await? {
            Some(record) => super::completion(record).map(Some),
            None => Some(None),
        })
    }

    /// Takes a forwarded invocation in as if submitted here, under the in-flight lock
    /// (`map`), `stored` read under it too. One that exists already (applied before a crash
    /// that kept its message, or submitted here first) is made durable if it was not, so
    /// that its message goes only once its record is stored. One whose target this binary
    /// does not know (a rolling deploy) ends at once with a terminal error its callers see.
    fn adopt(
        &self,
        map: &mut FastMap<InvocationId, Arc<Inflight>>,
        id: InvocationId,
        mut record: InvocationRecord,
        stored: bool,
        retired: &mut Vec<Arc<Inflight>>,
    ) -> Adoption {
        match map.get(&id) {
            // The send's own copy, which its sender's commit put here instead: this one runs.
            // That one leaves memory now, and its key's queue once the lock is let go (one
            // started already leaves as its gate opens, see `Engine::leave_for_inbox`).
            Some(existing) if existing.moved_to_inbox() => {
                let existing = existing.clone();
                self.retire_moved(map, &existing);
                retired.push(existing);
            }
            Some(existing) => {
                return Adoption::Durable(existing.make_durable(self.storage.as_ref()));
            }
            None => {}
        }
        if stored {
            return Adoption::Done;
        }
        if let Err(e) = self.resolve(&record.target) {
            tracing::error!(%id, "a forwarded invocation's target is unknown here: {e}");
            let now = self.now_ms();
            record.status = Status::Completed {
                outcome: Outcome::Failure {
                    code: match e {
                        EngineError::BadTarget(_) => 400,
                        _ => 404,
                    },
                    message: e.to_string(),
                },
                completed_at_ms: now,
                expires_at_ms: now
                    .saturating_add(crate::clock::millis(self.config.default_retention)),
            };
            let op = WriteOp::put_new_invocation(id, &record);
            // A handler's call from another partition hears the failure, as its callee's end.
            let caller = match (record.caller, &record.status) {
                (Some((caller, index)), Status::Completed { outcome, .. }) => Some(Completion {
                    id: caller,
                    index,
                    entry: JournalEntry::Call {
                        target: record.target.clone(),
                        invocation_id: id,
                        outcome: Some(outcome.clone()),
                    },
                    wakes: true,
                }),
                _ => None,
            };
            let ended =
                self.submit_completions_locked(map, vec![op], caller.into_iter().collect(), None);
            return Adoption::Ended(ended);
        }
        let execution_time_ms = super::scheduled_at(&record.status);
        record.seq = self.next_seq();
        let inflight = self.new_inflight(id, record, false, Journal::default());
        map.insert(id, inflight.clone());
        // A request that read the store for this id before it came reads again.
        self.claims.created(&id);
        Adoption::New(inflight, execution_time_ms)
    }

    /// Applies one page of the inbox, up to the first invocation there is no room for (the
    /// rest stays on disk); the messages applied are removed by a commit after everything
    /// they caused (one that takes in an invocation, right after its record), so a crash
    /// before leaves them, and applying them again finds that done. Returns how many it
    /// applied.
    async fn apply(&self, page: Vec<Inbound>) -> usize {
        let fetched = page.len();
        let ids: Vec<InvocationId> = page.iter().map(|m| m.id).collect();
        let mut done = Vec::with_capacity(fetched);
        let mut removed = 0;
        let mut retired = Vec::new();
        let mut effects: Vec<(u64, BoxFuture<'_, Result<Applied, String>>)> = Vec::new();
        let mut launches = Vec::new();
        let invoked: Vec<InvocationId> = page
            .iter()
            .filter(|m| m.message.starts_invocation())
            .map(|m| m.id)
            .collect();
        let early = match self.stored_early(&invoked) {
            Ok(early) => early,
            Err(e) => {
                tracing::error!("reading the inbox's invocations failed: {e}");
                return 0;
            }
        };
        {
            // Which forwarded invocations exist already, as of the in-flight lock and every
            // claim: none of them can be created, stored or leave memory between then and the
            // adoption.
            let _claims = self.claims.all();
            let mut map = self.inflight.lock().expect("inflight map");
            let stored = match self.stored_now(&map, early) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!("reading the inbox's invocations failed: {e}");
                    return 0;
                }
            };
            for Inbound { seq, id, message } in page {
                // Its partition left since the page was read: the message is its new owner's.
                if !self.runs(&id) {
                    continue;
                }
                let effect = match message {
                    InboxMessage::Invoke(record) => {
                        if self.admit_input(record.input.len()).is_err() {
                            break;
                        }
                        let stored = stored.get(&id).copied().unwrap_or(false);
                        // A call from another partition to one that exists (its idempotency
                        // or workflow key's): the caller waits on its result.
                        if let Some((caller, index)) = record.caller
                            && (stored || map.contains_key(&id))
                        {
                            let waiter = ResultWaiter {
                                source: id,
                                waiter: caller,
                                index,
                                call: true,
                            };
                            let target = Some(record.target);
                            effects.push((seq, self.join_result(waiter, target).boxed()));
                            continue;
                        }
                        match self.adopt(&mut map, id, *record, stored, &mut retired) {
                            Adoption::New(inflight, at) => {
                                let durable = inflight.make_durable(self.storage.as_ref());
                                launches.push((inflight, at));
                                self.removed_with(durable, id, seq).boxed()
                            }
                            Adoption::Durable(durable) => {
                                self.removed_with(durable, id, seq).boxed()
                            }
                            Adoption::Ended(ended) => async move {
                                ended.finish().await.map_err(|e| e.to_string())?;
                                Ok(Applied::Done)
                            }
                            .boxed(),
                            Adoption::Done => {
                                done.push(seq);
                                continue;
                            }
                        }
                    }
                    InboxMessage::CompleteAwakeable { awakeable, outcome } => {
                        self.complete_forwarded(awakeable, outcome).boxed()
                    }
                    InboxMessage::Cancel => control(self, id, self.cancel_here(id)).boxed(),
                    InboxMessage::Kill => control(self, id, self.kill_here(id)).boxed(),
                    InboxMessage::Purge => control(self, id, self.purge_here(id)).boxed(),
                    InboxMessage::Resume => {
                        control(self, id, self.resume_invocation_here(id)).boxed()
                    }
                    InboxMessage::Attach { waiter, index } => {
                        let waiter = ResultWaiter {
                            source: id,
                            waiter,
                            index,
                            call: false,
                        };
                        self.join_result(waiter, None).boxed()
                    }
                    InboxMessage::Complete { index, entry } => {
                        self.complete_from_elsewhere(id, index, entry).boxed()
                    }
                };
                effects.push((seq, effect));
            }
        }
        // Before the copies taken in queue on the same keys: this takes their ids out.
        for moved in retired {
            if !moved.running.load(std::sync::atomic::Ordering::SeqCst) {
                self.remove_queued(&moved);
            }
        }
        for (inflight, execution_time_ms) in launches {
            let now = execution_time_ms.is_none();
            self.launch(inflight.clone(), execution_time_ms);
            // After it queued, before its message leaves the inbox (below).
            if now {
                self.overtake_placements(&inflight);
            }
        }
        let (seqs, effects): (Vec<u64>, Vec<_>) = effects.into_iter().unzip();
        for (seq, result) in seqs.into_iter().zip(join_all(effects).await) {
            match result {
                Ok(Applied::Done) => done.push(seq),
                Ok(Applied::Removed) => removed += 1,
                // Stays, and is applied again in a later round.
                Ok(Applied::Later) => {}
                Err(reason) => {
                    // Left in the inbox: applied again later (a failed commit stops the
                    // process, a refused one takes the partition away from it: either way
                    // the next owner applies them). A partition that left (a drain's
                    // hand-over, a takeover) is no failure.
                    match ids.iter().all(|id| self.runs(id)) {
                        true => tracing::error!("applying the inbox failed: {reason}"),
                        false => tracing::info!(
                            "applying the inbox stopped: partitions moved to another process, \
                             which applies the rest ({reason})"
                        ),
                    }
                    return 0;
                }
            }
        }
        let applied = done.len() + removed;
        if applied > 0 {
            crate::failpoints::hit("inbox.applied");
        }
        if !done.is_empty()
            && let Err(e) = self
                .storage
                .submit(vec![WriteOp::InboxDone { seqs: done }])
                .await
        {
            tracing::error!("removing applied inbox messages failed: {e}");
        }
        applied
    }

    /// Which of `ids` are stored, read before the in-flight lock and the claims are taken (a
    /// round trip on PostgreSQL, which nothing else then waits out); with what
    /// [`Self::stored_now`] needs to tell the reads that still stand.
    pub(super) fn stored_early(
        &self,
        ids: &[InvocationId],
    ) -> Result<Vec<EarlyStored>, EngineError> {
        let partition_changes = self.partition_changes();
        let before: Vec<(u64, bool)> = {
            let map = self.inflight.lock().expect("inflight map");
            (ids.iter())
                .map(|id| (self.claims.creations(id), map.contains_key(id)))
                .collect()
        };
        let stored = self.storage.stored(ids)?;
        Ok((ids.iter().zip(before).zip(stored))
            .map(|((id, (creations, in_memory)), stored)| EarlyStored {
                id: *id,
                stored,
                creations,
                in_memory,
                partition_changes,
            })
            .collect())
    }

    /// Whether each invocation read by [`Self::stored_early`] is stored now, under the
    /// in-flight lock (`map`) and every claim. A record of an invocation of this process's
    /// partitions is first stored only by a commit of this process, queued while the
    /// invocation is in memory: one of an id derived from a key is created under its claim
    /// and counted in its slot's creations, one of a fresh id comes only from its message (or
    /// is a send placed here, in memory before its message exists). So the early read stands
    /// for one that was not in memory when it began, was not created since and is not in
    /// memory now, as long as no partition joined or left meanwhile (one that left and came
    /// back may hold what another process stored); the others (rare) are read again, here,
    /// under the lock.
    pub(super) fn stored_now(
        &self,
        map: &FastMap<InvocationId, Arc<Inflight>>,
        early: Vec<EarlyStored>,
    ) -> Result<HashMap<InvocationId, bool>, EngineError> {
        let partition_changes = self.partition_changes();
        let changed = |e: &EarlyStored| {
            !map.contains_key(&e.id)
                && (e.in_memory
                    || self.claims.creations(&e.id) != e.creations
                    || partition_changes != e.partition_changes)
        };
        let again: Vec<InvocationId> = early.iter().filter(|e| changed(e)).map(|e| e.id).collect();
        let mut stored: HashMap<InvocationId, bool> =
            early.into_iter().map(|e| (e.id, e.stored)).collect();
        stored.extend(again.iter().copied().zip(self.storage.stored(&again)?));
        Ok(stored)
    }

    /// The message at `seq` that takes in invocation `id`, removed by a batch queued right
    /// after the one that stores the invocation (`durable`): the writer commits them in that
    /// order, the removal fenced on the invocation's partition, so it never commits without
    /// the record. The next page is read after one commit, not two.
    async fn removed_with(
        &self,
        durable: CommitWaiter,
        id: InvocationId,
        seq: u64,
    ) -> Result<Applied, String> {
        let removal = WriteOp::InboxDone { seqs: vec![seq] };
        let removed = self
            .storage
            .submit_fenced(vec![removal], id.partition_key());
        durable.await.map_err(|e| e.to_string())?;
        removed.await.map_err(|e| e.to_string())?;
        Ok(Applied::Removed)
    }

    /// Records entry `index` of `id`, completed by an invocation of another partition, as a
    /// completion made here: with its wake-up, unless the entry was completed first (this
    /// message applied before a crash that kept it, or a cancellation that got there first).
    async fn complete_from_elsewhere(
        &self,
        id: InvocationId,
        index: u32,
        entry: JournalEntry,
    ) -> Result<Applied, String> {
        let in_memory = self
            .inflight
            .lock()
            .expect("inflight map")
            .contains_key(&id);
        // One in memory is checked under its lock as the completion is queued.
        if !in_memory {
            let gone = match self.storage.invocation(&id).map_err(|e| e.to_string())? {
                None => true,
                Some(record) => matches!(record.status, Status::Completed { .. }),
            };
            let done = gone
                || (self.storage.journal(&id).map_err(|e| e.to_string())?)
                    .iter()
                    .any(|(i, e)| *i == index && super::wake::completed_from_outside(e));
            if done {
                return Ok(Applied::Done);
            }
        }
        let completion = Completion {
            id,
            index,
            entry,
            wakes: true,
        };
        let pending = self.submit_completions(Vec::new(), vec![completion]);
        pending
            .finish()
            .await
            .map(|()| Applied::Done)
            .map_err(|e| e.to_string())
    }

    /// Makes `waiter`, of another partition, wait on the result of its source, of this one
    /// (an attach, or a call that found the invocation its key names): completed at once if
    /// the source has finished (an unknown one fails the entry with a 404), else recorded as
    /// a result waiter, which the source's completion completes; a task here also forwards the
    /// result, in case the source ended as the waiter was recorded (the first completion of
    /// the entry wins).
    async fn join_result(
        &self,
        waiter: ResultWaiter,
        target: Option<Target>,
    ) -> Result<Applied, String> {
        let source = waiter.source;
        let in_memory = self.inflight(&source).is_some();
        let record = (self.storage.invocation(&source)).map_err(|e| e.to_string())?;
        let done = match &record {
            Some(InvocationRecord {
                status: Status::Completed { outcome, .. },
                target,
                ..
            }) => Some(super::wake::result_completion(waiter, target, outcome)),
            None if !in_memory => {
                let unknown = Outcome::Failure {
                    code: 404,
                    message: format!("invocation {source} not found"),
                };
                // A call's entry names its target; an attach's does not.
                let target = target.unwrap_or_else(|| Target {
                    service: String::new(),
                    handler: String::new(),
                    key: None,
                });
                Some(super::wake::result_completion(waiter, &target, &unknown))
            }
            _ => None,
        };
        if let Some(done) = done {
            let pending = self.submit_completions(Vec::new(), vec![done]);
            pending.finish().await.map_err(|e| e.to_string())?;
            return Ok(Applied::Done);
        }
        let add = self.result_waiter(source, waiter.waiter, waiter.index, waiter.call);
        self.storage
            .submit(vec![add])
            .await
            .map_err(|e| e.to_string())?;
        let engine = self.clone();
        self.tasks.spawn(async move {
            let Ok(Some(done)) = engine.attach_here(source).await else {
                return;
            };
            let target = engine
                .storage
                .invocation(&source)
                .ok()
                .flatten()
                .map(|r| r.target);
            let Some(target) = target else {
                return;
            };
            let completion = super::wake::result_completion(waiter, &target, &done.outcome);
            if let Err(e) = engine
                .submit_completions(Vec::new(), vec![completion])
                .finish()
                .await
            {
                tracing::warn!(invocation = %waiter.waiter, error = %e, "cannot forward a result");
            }
        });
        Ok(Applied::Done)
    }

    async fn complete_forwarded(
        &self,
        awakeable: String,
        outcome: Outcome,
    ) -> Result<Applied, String> {
        use super::awakeables::AwakeableCompletionError as E;
        let Ok(parsed) = awakeable.parse() else {
            return Ok(Applied::Done);
        };
        match self
            .complete_awakeable_here(parsed, &awakeable, outcome)
            .await
        {
            Err(E::Engine(e)) => Err(e.to_string()),
            // Its entry is journaled again once its invocation's replay reaches it.
            Err(E::NotJournaled(_)) => Ok(Applied::Later),
            // Unknown, malformed or completed before: nothing to do, as at the process that
            // accepted it after the fact.
            Ok(()) | Err(_) => Ok(Applied::Done),
        }
    }
}

/// An invocation of an inbox page, read before the locks: whether it was stored, and as the
/// read began, its slot's creations, whether it was in memory and the engine's count of
/// partition changes.
pub(super) struct EarlyStored {
    pub(super) id: InvocationId,
    pub(super) stored: bool,
    pub(super) creations: u64,
    pub(super) in_memory: bool,
    pub(super) partition_changes: u64,
}

/// What applying one inbox message came to.
enum Applied {
    /// Its effect is durable: the message goes.
    Done,
    /// Its effect and the message's removal are durable, committed together or in order.
    Removed,
    /// Not applicable yet: the message stays for a later round.
    Later,
}

/// An operator's action from another process: failures other than the engine's (unknown
/// invocation, wrong state) were the operator's to see, and are logged here. One that failed
/// because the invocation's partition left meanwhile, or is leaving (its write was refused),
/// stays for its new owner; the rest of the page is applied.
async fn control(
    engine: &Engine,
    id: InvocationId,
    action: impl std::future::Future<Output = Result<(), super::ControlError>>,
) -> Result<Applied, String> {
    match action.await {
        // A send being placed is not acted on (see `load`): which copy runs is known soon.
        Err(_) if !engine.runs(&id) || engine.partition_leaving(&id) || engine.placing(&id) => {
            Ok(Applied::Later)
        }
        // Refused for a moment (it was being placed, its partition moving): asked again
        // later, not a failure of the whole page.
        Err(super::ControlError::Engine(super::EngineError::Overloaded(_))) => Ok(Applied::Later),
        Err(super::ControlError::Engine(e)) => Err(e.to_string()),
        Err(e) => {
            tracing::warn!("a forwarded control request failed: {e}");
            Ok(Applied::Done)
        }
        Ok(()) => Ok(Applied::Done),
    }
}

/// The owner's side: applies what other processes forwarded, as it arrives.
pub(super) async fn apply_inbox(engine: Engine) {
    let Some(signals) = engine.storage.signals() else {
        return;
    };
    let mut arrived = signals.inbox;
    let mut shutdown = engine.shutdown_signal();
    let ownership = engine.storage.ownership();
    loop {
        // Handed over to another process (after a drain): the inbox is its to apply.
        if !*ownership.borrow() {
            return;
        }
        // Forwarded work waits on disk, not in memory, while this process has too much to
        // do: the bounds that refuse new work from its own ingress hold it back.
        while engine.admit_input(0).is_err() || engine.admit_storage().is_err() {
            tokio::select! {
                () = tokio::time::sleep(BUSY_PAUSE) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        arrived.borrow_and_update();
        let mut page = match engine.storage.inbox(INBOX_PAGE, INBOX_PAGE_BYTES) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("reading the inbox failed: {e}");
                Vec::new()
            }
        };
        let fetched = page.len();
        // Messages of partitions another process runs are its to apply.
        page.retain(|message| engine.runs(&message.id));
        // More may wait: go on at once, unless nothing could be applied.
        if fetched > 0 && engine.apply(page).await == fetched {
            continue;
        }
        tokio::select! {
            _ = arrived.changed() => {}
            () = engine.joined.notified() => {}
            () = tokio::time::sleep(FALLBACK_POLL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

//! Serving without running: on a shared database, a process that does not run the
//! invocations yet (it waits for the lease) still serves every request. What it accepts is
//! forwarded durably into the owner's inbox before it answers, and results are read from the
//! store, woken by the owner's notifications. The owner applies its inbox in arrival order
//! ([`apply_inbox`]) and removes each message once its effect is durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, join_all};

use super::{Completed, Engine, EngineError, InvokeRequest, Journal, Prepared, SendStatus};
use crate::ids::InvocationId;
use crate::storage::{
    Forwarded, Inbound, InboxMessage, InvocationRecord, Outcome, Status, WriteOp,
};

/// Messages applied in one round at most (their records commit together), and the bytes
/// after which a round takes no more.
const INBOX_PAGE: usize = 1_000;
const INBOX_PAGE_BYTES: usize = 8 << 20;

/// How long the inbox waits before looking again while the process is too busy to take it.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// How often waits on the store look again without a notification (one lost with a
/// connection, or a database that delivers none).
const FALLBACK_POLL: Duration = Duration::from_secs(1);

impl Engine {
    /// Whether this engine runs invocations; `false` while another process owns them.
    pub(crate) fn runs_invocations(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Request-response through the owner: the invocation is forwarded, then its result
    /// awaited in the store.
    pub(super) async fn call_forwarded(
        &self,
        req: InvokeRequest,
    ) -> Result<(InvocationId, Arc<Completed>, bool), EngineError> {
        let Prepared {
            id,
            record,
            workflow_run,
            ..
        } = self.prepare(req, None)?;
        let forwarded = self
            .storage
            .forward(id, InboxMessage::Invoke(Box::new(record)))
            .await?;
        let duplicate = forwarded == Forwarded::Duplicate;
        if workflow_run && duplicate {
            return Err(EngineError::WorkflowAlreadyInvoked);
        }
        match self.wait_stored(id).await? {
            Some(done) => Ok((id, done, duplicate)),
            None => Err(EngineError::Lost("the invocation was purged".into())),
        }
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
    /// one for its key (accepted first elsewhere: its order and its answer come first).
    pub(super) fn behind_inbox(&self, id: &InvocationId) -> Result<bool, EngineError> {
        if !self.shared_store {
            return Ok(false);
        }
        if !self.runs_invocations() {
            return Ok(true);
        }
        let pending = self.storage.inbox_pending(id)?;
        Ok(pending.starts || pending.partition)
    }

    /// [`Self::behind_inbox`] for a request from outside; only keyed and idempotent work
    /// can be behind a message (a fresh unkeyed invocation is new everywhere).
    pub(super) fn request_behind_inbox(&self, req: &InvokeRequest) -> Result<bool, EngineError> {
        if !self.shared_store
            || (self.runs_invocations()
                && req.target.key.is_none()
                && req.idempotency_key.is_none())
        {
            return Ok(false);
        }
        let (_, handler) = self.resolve(&req.target)?;
        let workflow_run = handler.kind == crate::registry::HandlerKind::Workflow;
        self.behind_inbox(&self.id_for(req, workflow_run, self.now_ms()))
    }

    /// Waits until the store holds `id`'s result; `None` once neither the store nor an inbox
    /// knows `id`.
    pub(super) async fn wait_stored(
        &self,
        id: InvocationId,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        let mut finished = self.storage.signals().map(|s| s.finished);
        let mut shutdown = self.shutdown_signal();
        loop {
            // Seen before the reads: a result committed after them bumps the counter again.
            if let Some(finished) = finished.as_mut() {
                finished.borrow_and_update();
            }
            // The inbox before the store: its message is removed only after the record it
            // caused is stored, so between the two reads `id` cannot slip through both.
            let forwarded = self.storage.inbox_pending(&id)?.starts;
            match self.storage.invocation(&id)? {
                Some(InvocationRecord {
                    status:
                        Status::Completed {
                            outcome,
                            expires_at_ms,
                            ..
                        },
                    ..
                }) => {
                    return Ok(Some(Arc::new(Completed {
                        outcome,
                        expires_at_ms,
                    })));
                }
                None if !forwarded => return Ok(None),
                _ => {}
            }
            let notified = async {
                match finished.as_mut() {
                    Some(finished) => {
                        let _ = finished.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(FALLBACK_POLL) => {}
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(EngineError::Lost("the process is shutting down".into()));
                }
            }
        }
    }

    /// Takes a forwarded invocation in as if submitted here. One that exists already (applied
    /// before a crash that kept its message, or submitted here first) is made durable if it
    /// was not, so that its message goes only once its record is stored. One whose target
    /// this binary does not know (a rolling deploy) ends at once with a terminal error its
    /// callers see. The future resolves once the record is durable.
    fn adopt(
        &self,
        id: InvocationId,
        mut record: InvocationRecord,
    ) -> Result<Option<BoxFuture<'static, Result<(), EngineError>>>, EngineError> {
        let execution_time_ms = super::scheduled_at(&record.status);
        let unknown = self.resolve(&record.target).err();
        record.seq = self.next_seq();
        let inflight = {
            let mut map = self.inflight.lock().expect("inflight map");
            if let Some(existing) = map.get(&id) {
                let durable = existing.make_durable(self.storage.as_ref());
                return Ok(Some(durable.map(|r| r.map_err(EngineError::from)).boxed()));
            }
            if self.storage.invocation(&id)?.is_some() {
                return Ok(None);
            }
            if let Some(e) = unknown {
                drop(map);
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
                let durable = self
                    .storage
                    .submit(vec![WriteOp::put_new_invocation(id, &record)]);
                return Ok(Some(durable.map(|r| r.map_err(EngineError::from)).boxed()));
            }
            let inflight = self.new_inflight(id, record, false, Journal::default());
            map.insert(id, inflight.clone());
            inflight
        };
        let durable = inflight.make_durable(self.storage.as_ref());
        self.launch(inflight, execution_time_ms);
        Ok(Some(durable.map(|r| r.map_err(EngineError::from)).boxed()))
    }

    /// Applies one page of the inbox, up to the first invocation there is no room for (the
    /// rest stays on disk); the messages applied are removed by a commit after everything
    /// they caused, so a crash before leaves them, and applying them again finds that done.
    /// Returns how many it applied.
    async fn apply(&self, page: Vec<Inbound>) -> usize {
        let mut seqs = Vec::with_capacity(page.len());
        let mut effects: Vec<BoxFuture<'_, Result<(), String>>> = Vec::new();
        for Inbound { seq, id, message } in page {
            match message {
                InboxMessage::Invoke(record) => {
                    if self.admit_input(record.input.len()).is_err() {
                        break;
                    }
                    match self.adopt(id, *record) {
                        Ok(Some(durable)) => {
                            effects.push(durable.map(|r| r.map_err(|e| e.to_string())).boxed());
                        }
                        Ok(None) => {}
                        // A failed read: this message and the rest wait for the next round.
                        Err(e) => {
                            effects.push(std::future::ready(Err(e.to_string())).boxed());
                            break;
                        }
                    }
                }
                InboxMessage::CompleteAwakeable { awakeable, outcome } => {
                    effects.push(self.complete_forwarded(awakeable, outcome).boxed());
                }
                InboxMessage::Cancel => effects.push(control(self.cancel_here(id)).boxed()),
                InboxMessage::Kill => effects.push(control(self.kill_here(id)).boxed()),
                InboxMessage::Purge => effects.push(control(self.purge_here(id)).boxed()),
                InboxMessage::Resume => {
                    effects.push(control(self.resume_invocation_here(id)).boxed());
                }
            }
            seqs.push(seq);
        }
        let failed = join_all(effects)
            .await
            .into_iter()
            .filter_map(Result::err)
            .next();
        if let Some(reason) = failed {
            // Left in the inbox: applied again later (a failed commit stops the process, and
            // the next owner applies them).
            tracing::error!("applying the inbox failed: {reason}");
            return 0;
        }
        let applied = seqs.len();
        if applied > 0
            && let Err(e) = self.storage.submit(vec![WriteOp::InboxDone { seqs }]).await
        {
            tracing::error!("removing applied inbox messages failed: {e}");
        }
        applied
    }

    async fn complete_forwarded(&self, awakeable: String, outcome: Outcome) -> Result<(), String> {
        use super::awakeables::AwakeableCompletionError as E;
        let Ok(parsed) = awakeable.parse() else {
            return Ok(());
        };
        match self
            .complete_awakeable_here(parsed, &awakeable, outcome)
            .await
        {
            Err(E::Engine(e)) => Err(e.to_string()),
            // Unknown, malformed or completed before: nothing to do, as at the process that
            // accepted it after the fact.
            Ok(()) | Err(_) => Ok(()),
        }
    }
}

/// An operator's action from another process: failures other than the engine's (unknown
/// invocation, wrong state) were the operator's to see, and are logged here.
async fn control(
    action: impl std::future::Future<Output = Result<(), super::ControlError>>,
) -> Result<(), String> {
    match action.await {
        Err(super::ControlError::Engine(e)) => Err(e.to_string()),
        Err(e) => {
            tracing::warn!("a forwarded control request failed: {e}");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// The owner's side: applies what other processes forwarded, as it arrives.
pub(super) async fn apply_inbox(engine: Engine) {
    let Some(signals) = engine.storage.signals() else {
        return;
    };
    let mut arrived = signals.inbox;
    let mut shutdown = engine.shutdown_signal();
    loop {
        // Forwarded work waits on disk, not in memory, while this process has too much to
        // do: the bounds that refuse new work from its own ingress hold it back.
        while engine.admit_input(0).is_err() || engine.storage.admit_new_work().is_err() {
            tokio::select! {
                () = tokio::time::sleep(BUSY_PAUSE) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        arrived.borrow_and_update();
        let page = match engine.storage.inbox(INBOX_PAGE, INBOX_PAGE_BYTES) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("reading the inbox failed: {e}");
                Vec::new()
            }
        };
        let fetched = page.len();
        // More may wait: go on at once, unless nothing could be applied.
        if fetched > 0 && engine.apply(page).await == fetched {
            continue;
        }
        tokio::select! {
            _ = arrived.changed() => {}
            () = tokio::time::sleep(FALLBACK_POLL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

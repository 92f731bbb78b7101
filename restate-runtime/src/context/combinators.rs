//! Waiting on several durable operations. Each operation has its own journal entry, taken when
//! it is created; what a combinator decides on top (which branch of a race won, which operation
//! failed first, in which order a stream yielded) is journaled as a `Select` entry at a position
//! taken when the combinator is created, so a replay takes the same branch even if every
//! operation is complete by then.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::Stream;
use futures::future::{BoxFuture, Either};

use super::durable::DurableFuture;
use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use super::zone;
use crate::engine::OutputState;
use crate::error::TerminalError;
use crate::ids::InvocationId;
use crate::storage::{CommitWaiter, InboxMessage, JournalEntry, Outcome, WriteOp};

/// What the journal says about a decision at one position.
#[derive(Clone, Copy)]
enum Recorded {
    /// Nothing yet: decide now.
    Open,
    /// Decided by an earlier attempt.
    Winner(usize),
    /// The journal disagrees (already reported): wait forever, the attempt is stopping.
    Mismatch,
}

impl InvocationContext {
    /// The decision recorded at `index` among `branches` choices, checked.
    fn recorded_choice(&self, index: u32, branches: usize, what: &str) -> Recorded {
        match self.replayed(index) {
            None if self.replay_ends_at(index) => Recorded::Mismatch,
            None => Recorded::Open,
            Some(JournalEntry::Select { winner }) if (winner as usize) < branches => {
                Recorded::Winner(winner as usize)
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("{what} of {branches}"));
                Recorded::Mismatch
            }
        }
    }

    /// Journals the decision at `index`. Callers wait for it to be durable before the handler
    /// sees the outcome: a side effect acting on a decision that a crash then loses would be
    /// taken again on another branch.
    fn record_choice(&self, index: u32, winner: usize) -> Option<CommitWaiter> {
        let entry = JournalEntry::Select {
            winner: winner as u32,
        };
        self.journal(index, entry, Vec::new())
    }

    pub(crate) async fn select<A, B>(&self, a: A, b: B) -> Either<A::Output, B::Output>
    where
        A: Future,
        B: Future,
    {
        let index = self.take_index();
        match self.recorded_choice(index, 2, "select") {
            Recorded::Winner(0) => Either::Left(a.await),
            Recorded::Winner(_) => Either::Right(b.await),
            Recorded::Mismatch => std::future::pending().await,
            Recorded::Open => {
                // A branch that creates an operation in a poll it does not finish in pauses
                // the invocation: a replay would poll the winner only.
                let refuse = |reason| self.stop(Abort::Pause(reason));
                let a = zone::branch(0, a, refuse);
                let b = zone::branch(1, b, refuse);
                let (winner, result) = tokio::select! {
                    biased;
                    v = a => (0, Either::Left(v)),
                    v = b => (1, Either::Right(v)),
                };
                self.durable(self.record_choice(index, winner)).await;
                result
            }
        }
    }

    /// The first of `futures` to finish, by position, with its output (earlier positions win
    /// ties). The decision's position is taken now. Only durable futures: their journal
    /// positions were all taken when they were created, so polling some of them and not others
    /// (a replay polls the recorded winner only) shifts no later position.
    pub(crate) fn choose<'a, T: Send + 'a>(
        &'a self,
        futures: Vec<DurableFuture<'a, T>>,
    ) -> impl Future<Output = (usize, T)> + Send + 'a {
        let index = self.take_index();
        let mut futures: Vec<Option<DurableFuture<'a, T>>> =
            futures.into_iter().map(Some).collect();
        async move {
            if futures.is_empty() {
                // Nothing can ever win, and nothing waits: the attempt would hang unseen.
                self.stop(Abort::Pause(format!(
                    "a race over no operations (journal entry {index}) can never finish"
                )));
                return std::future::pending().await;
            }
            match self.recorded_choice(index, futures.len(), "race") {
                Recorded::Mismatch => std::future::pending().await,
                Recorded::Winner(w) => {
                    let out = std::future::poll_fn(|cx| poll_one(&mut futures, w, cx)).await;
                    (w, out)
                }
                Recorded::Open => {
                    let (w, out) = std::future::poll_fn(|cx| poll_first(&mut futures, cx)).await;
                    self.durable(self.record_choice(index, w)).await;
                    (w, out)
                }
            }
        }
    }

    /// Every output in order, or the first error: which operation failed first is journaled
    /// (nothing is when all succeed, as a replay then completes them all again).
    pub(crate) fn all<'a, T: Send + 'a>(
        &'a self,
        futures: Vec<DurableFuture<'a, Result<T, TerminalError>>>,
    ) -> DurableFuture<'a, Result<Vec<T>, TerminalError>> {
        let index = self.take_index();
        let mut pending: Vec<Option<_>> = futures.into_iter().map(Some).collect();
        let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
        DurableFuture::new(self, async move {
            match self.recorded_choice(index, pending.len(), "all") {
                Recorded::Mismatch => std::future::pending().await,
                // The failure an earlier attempt saw first.
                Recorded::Winner(w) => {
                    match std::future::poll_fn(|cx| poll_one(&mut pending, w, cx)).await {
                        Err(e) => Err(e),
                        Ok(_) => {
                            self.stop(Abort::Pause(format!(
                                "non-determinism: operation {w} of an `all` (journal entry {index}) failed before and succeeded now"
                            )));
                            std::future::pending().await
                        }
                    }
                }
                Recorded::Open => {
                    let failed = std::future::poll_fn(|cx| {
                        for (at, slot) in pending.iter_mut().enumerate() {
                            let Some(future) = slot else { continue };
                            if let Poll::Ready(out) = Pin::new(future).poll(cx) {
                                *slot = None;
                                match out {
                                    Ok(value) => done[at] = Some(value),
                                    Err(e) => return Poll::Ready(Some((at, e))),
                                }
                            }
                        }
                        if pending.iter().all(Option::is_none) {
                            Poll::Ready(None)
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                    match failed {
                        None => Ok(done.into_iter().map(|v| v.expect("every output")).collect()),
                        Some((at, e)) => {
                            self.durable(self.record_choice(index, at)).await;
                            Err(e)
                        }
                    }
                }
            }
        })
    }

    /// A stream of `futures`' outputs in completion order; the position of each decision is
    /// taken now, one per operation, so the order is journaled entry by entry.
    pub(crate) fn unordered<'a, T>(
        &'a self,
        futures: Vec<DurableFuture<'a, T>>,
    ) -> Unordered<'a, T> {
        let first = self.take_indices(futures.len() as u32);
        Unordered {
            ctx: self,
            first,
            yielded: 0,
            recorded: None,
            committing: None,
            futures: futures.into_iter().map(Some).collect(),
        }
    }

    /// Journals a cancellation request together with the request itself (the target's record
    /// marked, with a wake-up), then delivers it in memory once durable (a queued target ends at
    /// once, a suspended one is resumed). A replay delivers it again (cancellation is
    /// idempotent).
    pub(crate) fn cancel_invocation(&self, id: InvocationId) {
        let index = self.take_index();
        let durable = match self.replayed(index) {
            Some(JournalEntry::CancelInvocation { invocation_id }) if invocation_id == id => None,
            Some(other) => {
                self.mismatch(index, &other, &format!("cancel {id}"));
                return;
            }
            None if self.replay_ends() => return,
            None => {
                let entry = JournalEntry::CancelInvocation { invocation_id: id };
                let request = self.engine.cancel_request_ops(id);
                match self.journal(index, entry, request) {
                    Some(waiter) => Some(waiter),
                    None => return,
                }
            }
        };
        // Delivering it again would write to the target; another process's target gets it
        // from the request, through its inbox.
        if self.engine.config().replay_check || self.engine.elsewhere(&id) {
            return;
        }
        let engine = self.engine.clone();
        self.engine.tasks().spawn(async move {
            if let Some(Err(e)) = futures::future::OptionFuture::from(durable).await {
                tracing::warn!(invocation = %id, error = %e, "cancel not recorded");
                return;
            }
            if engine.crash_point("cancel.recorded") {
                return;
            }
            if let Err(e) = engine.cancel_here(id).await {
                tracing::debug!(error = %e, "cancel had no effect");
            }
        });
    }

    /// Another invocation's result if it has finished (`None` while it runs), journaled so a
    /// replay sees the same answer; an unknown id is a terminal 404.
    pub(crate) fn peek_output<T: serde::de::DeserializeOwned>(
        &self,
        id: InvocationId,
    ) -> impl Future<Output = Result<Option<T>, TerminalError>> + Send + '_ {
        let index = self.take_index();
        let peek = match self.replayed(index) {
            Some(JournalEntry::GetOutput {
                invocation_id,
                outcome,
            }) if invocation_id == id => Peek::Known(outcome, None),
            Some(other) => {
                self.mismatch(index, &other, &format!("output of {id}"));
                Peek::Stopped
            }
            None if self.replay_ends() => Peek::Stopped,
            None => match self.engine.output_for_handler(id) {
                Err(e) => {
                    self.stop(Abort::Retry(format!("output lookup failed: {e}")));
                    Peek::Stopped
                }
                Ok(Some(state)) => self.journal_output(index, id, state, true),
                Ok(None) => Peek::AfterOwnWrites,
            },
        };
        async move {
            let peek = match peek {
                Peek::AfterOwnWrites => match self.engine.output_after_own_writes(id).await {
                    Ok(state) => self.journal_output(index, id, state, false),
                    Err(e) => {
                        self.stop(Abort::Retry(format!("output lookup failed: {e}")));
                        Peek::Stopped
                    }
                },
                peek => peek,
            };
            let Peek::Known(outcome, waiter) = peek else {
                return std::future::pending().await;
            };
            if waiter.is_some() {
                self.durable(waiter).await;
            }
            match outcome {
                None => Ok(None),
                Some(outcome) => outcome_to_result(outcome).map(Some),
            }
        }
    }

    /// Journals what `output` found of invocation `id` at `index`, in memory here or in the
    /// store.
    fn journal_output(
        &self,
        index: u32,
        id: InvocationId,
        state: OutputState,
        in_memory: bool,
    ) -> Peek {
        let outcome = state.outcome(id);
        let entry = JournalEntry::GetOutput {
            invocation_id: id,
            outcome: outcome.clone(),
        };
        // Seen in memory, the result may still be committing: the handler acts on it only
        // once this entry, queued after it and fenced with it, is durable.
        match self.journal_result_of(index, entry, id, in_memory) {
            Some(waiter) => Peek::Known(outcome, Some(waiter)),
            None => Peek::Stopped,
        }
    }

    /// Whether invocation `id` can only end after this one: it is this one, or an exclusive
    /// invocation of the key this exclusive invocation holds (queued behind it), which this
    /// one has not cancelled (a cancelled one ends at once).
    fn would_wait_on_itself(&self, id: InvocationId) -> bool {
        if id == self.id() {
            return true;
        }
        let queued_behind = self
            .engine
            .target_in_memory(&id)
            .is_some_and(|target| self.exclusive_on(&target));
        // Only then is the journal read for a cancel of it (rare: no scan on every attach).
        queued_behind
            && !self.inflight.state().journal.iter().any(|(_, e)| {
                matches!(e, JournalEntry::CancelInvocation { invocation_id } if *invocation_id == id)
            })
    }

    pub(crate) fn attach_invocation<T: serde::de::DeserializeOwned>(
        &self,
        id: InvocationId,
    ) -> impl Future<Output = Result<T, TerminalError>> + Send + '_ {
        let outcome = self.attach_at(self.take_index(), id);
        async move { outcome_to_result(outcome.await) }
    }

    /// Waits for invocation `id`'s outcome, journaled at `index` (taken earlier).
    pub(crate) fn attach_at(
        &self,
        index: u32,
        id: InvocationId,
    ) -> impl Future<Output = Outcome> + Send + '_ {
        let pending = || JournalEntry::Attach {
            invocation_id: id,
            outcome: None,
        };
        // Journaled now, or replayed without its result: the result is fetched once known.
        // `None`: the attempt stops; `Some(waiter)`: a commit to wait for before the result
        // is the handler's (a result seen in memory may still be committing).
        let ok: Option<Option<CommitWaiter>> = match self.replayed(index) {
            Some(JournalEntry::Attach {
                invocation_id,
                outcome,
            }) if invocation_id == id => {
                if outcome.is_none() {
                    self.forward_outcome(index, id, pending());
                }
                Some(None)
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("attach {id}"));
                None
            }
            None if self.replay_ends() => None,
            None => {
                // Finished already (or unknown): the result is journaled at once. Running here:
                // the entry is recorded as a result waiter of `id`, whose completion completes
                // it (also after a restart), and fetched in memory meanwhile.
                let known = match self.engine.elsewhere(&id) {
                    true => Ok(None),
                    false => self.engine.output_for_handler(id),
                };
                match known {
                    Err(e) => {
                        self.stop(Abort::Retry(format!("attach lookup failed: {e}")));
                        None
                    }
                    // Another process runs it, or (on a shared store) it is not in memory
                    // here and may still be a message in an inbox: its owner completes the
                    // entry (at once if it has finished), after any message that creates it,
                    // which a read here could miss.
                    Ok(None) => {
                        let attach = InboxMessage::Attach {
                            waiter: self.id(),
                            index,
                        };
                        let forward = WriteOp::forward(id, &attach);
                        self.journal(index, pending(), vec![forward]).map(|_| None)
                    }
                    Ok(Some(state)) => match state.outcome(id) {
                        outcome @ Some(_) => {
                            let entry = JournalEntry::Attach {
                                invocation_id: id,
                                outcome,
                            };
                            self.journal_result_of(index, entry, id, true).map(Some)
                        }
                        // Itself, or one queued behind it on the key it holds: the result
                        // would never come. Failed at once, as such a call is.
                        None if self.would_wait_on_itself(id) => {
                            let outcome = Outcome::Failure {
                                code: 409,
                                message: format!(
                                    "deadlock: invocation {id} cannot end before this exclusive \
                                     handler does (it is this invocation, or waits for the key \
                                     this one holds); send it without waiting for its result here"
                                ),
                            };
                            let entry = JournalEntry::Attach {
                                invocation_id: id,
                                outcome: Some(outcome),
                            };
                            self.journal(index, entry, Vec::new()).map(Some)
                        }
                        None => {
                            let waiter = self.engine.result_waiter(id, self.id(), index, false);
                            let ok = self.journal(index, pending(), vec![waiter]).is_some();
                            if ok {
                                self.forward_outcome(index, id, pending());
                            }
                            ok.then_some(None)
                        }
                    },
                }
            }
        };
        async move {
            let Some(commit) = ok else {
                return std::future::pending().await;
            };
            if commit.is_some() {
                self.durable(commit).await;
            }
            self.await_entry(index, |e| match e {
                JournalEntry::Attach {
                    outcome: Some(o), ..
                } => Some(o.clone()),
                _ => None,
            })
            .await
        }
    }
}

/// Where a handler's `output` of another invocation stands as its future is made.
enum Peek {
    /// Replayed, or journaled now (with the commit to wait for before the handler sees it).
    Known(Option<Outcome>, Option<CommitWaiter>),
    /// To be read from the store once this process's writes so far are decided.
    AfterOwnWrites,
    /// The attempt stops here.
    Stopped,
}

/// Polls the future at `at` (taking it when it finishes); a position already taken never
/// finishes again (a journal that names it twice is a mismatch the attempt stops on).
fn poll_one<F: Future + Unpin>(
    futures: &mut [Option<F>],
    at: usize,
    cx: &mut TaskContext<'_>,
) -> Poll<F::Output> {
    let Some(future) = futures[at].as_mut() else {
        return Poll::Pending;
    };
    let out = std::task::ready!(Pin::new(future).poll(cx));
    futures[at] = None;
    Poll::Ready(out)
}

/// Polls every future in position order; the first finished one is taken.
fn poll_first<F: Future + Unpin>(
    futures: &mut [Option<F>],
    cx: &mut TaskContext<'_>,
) -> Poll<(usize, F::Output)> {
    for at in 0..futures.len() {
        if let Poll::Ready(out) = poll_one(futures, at, cx) {
            return Poll::Ready((at, out));
        }
    }
    Poll::Pending
}

/// Durable operations' outputs in the order they finish, each with its position in the list
/// given to [`Context::unordered`](crate::Context::unordered). The order is journaled (each
/// item is yielded once its place in the order is durable): a replay yields the same sequence
/// even when every operation is complete by then.
#[must_use = "streams do nothing unless polled"]
pub struct Unordered<'a, T> {
    ctx: &'a InvocationContext,
    /// The journal position of the first decision; the n-th item's is `first + n`.
    first: u32,
    yielded: usize,
    /// The next decision, read from the journal once.
    recorded: Option<Recorded>,
    /// A decided item, yielded once its decision is durable.
    committing: Option<(usize, T, BoxFuture<'a, ()>)>,
    futures: Vec<Option<DurableFuture<'a, T>>>,
}

// Nothing in it is pinned in place: the operations are boxed, outputs are moved out as values.
impl<T> Unpin for Unordered<'_, T> {}

impl<'a, T> Stream for Unordered<'a, T> {
    type Item = (usize, T);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some((_, _, commit)) = &mut this.committing {
                std::task::ready!(commit.as_mut().poll(cx));
                let (at, out, _) = this.committing.take().expect("an item being committed");
                return Poll::Ready(Some(this.advance(at, out)));
            }
            if this.yielded == this.futures.len() {
                return Poll::Ready(None);
            }
            let index = this.first + this.yielded as u32;
            let ctx = this.ctx;
            let branches = this.futures.len();
            let recorded = *this
                .recorded
                .get_or_insert_with(|| ctx.recorded_choice(index, branches, "unordered"));
            match recorded {
                Recorded::Mismatch => return Poll::Pending,
                Recorded::Winner(w) if this.futures[w].is_none() => {
                    ctx.stop(Abort::Pause(format!(
                        "non-determinism: journal entry {index} names operation {w} of an `unordered`, which it yielded already"
                    )));
                    return Poll::Pending;
                }
                Recorded::Winner(w) => {
                    let out = std::task::ready!(poll_one(&mut this.futures, w, cx));
                    return Poll::Ready(Some(this.advance(w, out)));
                }
                Recorded::Open => {
                    let (w, out) = std::task::ready!(poll_first(&mut this.futures, cx));
                    let waiter = ctx.record_choice(index, w);
                    this.committing = Some((w, out, Box::pin(ctx.durable(waiter))));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.futures.len() - self.yielded;
        (left, Some(left))
    }
}

impl<T> Unordered<'_, T> {
    /// Counts an item as yielded.
    fn advance(&mut self, at: usize, out: T) -> (usize, T) {
        self.yielded += 1;
        self.recorded = None;
        (at, out)
    }
}

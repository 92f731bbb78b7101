//! A store seen without writing: what a replay check reads through, so that nothing it runs
//! can commit, whatever path a handler takes.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::{
    CommitWaiter, ForwardWaiter, HintHead, InboxMessage, InvocationRecord, JournalEntry, Outcome,
    ResultWaiter, StateScope, Storage, StorageError, Target, UnfinishedHint, WriteOp, WriterStats,
};
use crate::ids::InvocationId;

/// Every read of the store it wraps; every write refused.
pub(crate) struct ReadOnly(pub Arc<dyn Storage>);

fn refused() -> StorageError {
    StorageError::Backend("a replay check writes nothing".into())
}

impl Storage for ReadOnly {
    fn submit(&self, _ops: Vec<WriteOp>) -> CommitWaiter {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(refused()));
        CommitWaiter::new(rx)
    }
    fn forward(&self, _id: InvocationId, _message: InboxMessage) -> ForwardWaiter {
        Box::pin(std::future::ready(Err(refused())))
    }
    fn admit_new_work(&self) -> Result<(), StorageError> {
        Err(refused())
    }
    fn invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>, StorageError> {
        self.0.invocation(id)
    }
    fn journal(&self, id: &InvocationId) -> Result<Vec<(u32, JournalEntry)>, StorageError> {
        self.0.journal(id)
    }
    fn state(&self, scope: &StateScope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.state(scope, name)
    }
    fn state_async(&self, scope: &StateScope, name: &str) -> super::StateWaiter {
        self.0.state_async(scope, name)
    }
    fn state_keys(&self, scope: &StateScope) -> Result<Vec<String>, StorageError> {
        self.0.state_keys(scope)
    }
    fn promise(&self, scope: &StateScope, name: &str) -> Result<Option<Outcome>, StorageError> {
        self.0.promise(scope, name)
    }
    fn invocations(
        &self,
        after: Option<InvocationId>,
        limit: usize,
    ) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError> {
        self.0.invocations(after, limit)
    }
    fn promise_waiters(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Vec<(InvocationId, u32)>, StorageError> {
        self.0.promise_waiters(scope, name)
    }
    fn unfinished(&self) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.0.unfinished()
    }
    fn unfinished_where(
        &self,
        keep: &mut dyn FnMut(InvocationId, Option<HintHead>) -> bool,
    ) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.0.unfinished_where(keep)
    }
    fn due(
        &self,
        after: Option<(u64, InvocationId)>,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InvocationId)>, StorageError> {
        self.0.due(after, until_ms, limit)
    }
    fn due_len(&self) -> Result<u64, StorageError> {
        self.0.due_len()
    }
    fn result_waiters(
        &self,
        source: Option<&InvocationId>,
    ) -> Result<Vec<ResultWaiter>, StorageError> {
        self.0.result_waiters(source)
    }
    fn woken(&self) -> Result<Vec<InvocationId>, StorageError> {
        self.0.woken()
    }
    fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(InvocationId, Option<Target>)>, StorageError> {
        self.0.expired(now_ms, limit)
    }
    fn partitions(&self) -> u32 {
        self.0.partitions()
    }
    fn writer_stats(&self) -> WriterStats {
        self.0.writer_stats()
    }
    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.0.failure()
    }
    fn secret(&self) -> [u8; 32] {
        self.0.secret()
    }
    fn close(&self) {
        self.0.close();
    }
}

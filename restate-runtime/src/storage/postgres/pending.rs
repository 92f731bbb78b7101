//! Inbox checks in groups: whether messages wait in an inbox for a key or an id, asked by
//! many tasks at once (each handler's send or call to a key, each keyed or idempotent request
//! from outside), read many to one statement. A group takes only what was asked before its
//! statement began: every answer comes from a read that began after it was asked, so a
//! message committed before the ask is seen (per-key order across processes, as with a read
//! of its own). A few groups are read at once, so that one slow statement holds up only its
//! own checks; while all of those run, the next group gathers.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Reads, answer_each, backend, query};
use crate::ids::InvocationId;
use crate::storage::{InboxPending, StorageError};

/// Checks one statement takes at most.
const MAX_GROUP: usize = 1_000;
/// Statements read at once.
const READS_AT_ONCE: usize = 2;

/// One check on its way.
pub(super) struct Asked {
    pub(super) id: InvocationId,
    pub(super) done: oneshot::Sender<Result<InboxPending, StorageError>>,
}

/// Per check, in the order asked: any message for its id, and any message for its key (its
/// partition key).
pub(super) const READ: &str = "SELECT \
     EXISTS (SELECT 1 FROM restate_inbox i WHERE i.partition_key = t.p AND i.id = t.i), \
     EXISTS (SELECT 1 FROM restate_inbox i WHERE i.partition_key = t.p) \
     FROM unnest($1::int8[], $2::bytea[]) WITH ORDINALITY AS t(p, i, n) ORDER BY t.n";

/// Reads what is asked, in groups, until the queue closes.
pub(super) async fn run(reads: Reads, mut asked: mpsc::UnboundedReceiver<Asked>) {
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

/// Reads one group and answers each of its checks.
async fn answer(reads: Reads, group: Vec<Asked>) {
    let keys: Vec<i64> = group.iter().map(|a| a.id.partition_key() as i64).collect();
    let ids: Vec<Vec<u8>> = (group.iter())
        .map(|a| a.id.storage_key().to_vec())
        .collect();
    let rows = query(reads, READ, vec![Box::new(keys), Box::new(ids)]).await;
    let answers = rows.and_then(|rows| {
        if rows.len() != group.len() {
            return Err(StorageError::Backend(format!(
                "the inbox check answered {} rows for {} checks",
                rows.len(),
                group.len()
            )));
        }
        (rows.iter())
            .map(|row| {
                Ok(InboxPending {
                    starts: row.try_get(0).map_err(backend)?,
                    partition: row.try_get(1).map_err(backend)?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()
    });
    answer_each(group.into_iter().map(|asked| asked.done), answers);
}

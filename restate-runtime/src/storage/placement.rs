//! Where a handler's one-way send to an object key lands on a shared database, decided by
//! the commit of the entry that records it: in the key's partition as written, or behind
//! messages for the key that wait in that partition's inbox (per-key order across
//! processes, law 5). The handler does not wait for a read to decide it; the writer reads
//! the inbox inside the transaction that commits the send ([`Storage::submit_placing`]).
//!
//! [`Storage::submit_placing`]: super::Storage::submit_placing

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::records::{self, InvocationRecord};
use super::{InboxMessage, StorageError, WriteOp};
use crate::ids::InvocationId;

/// One send's placement, shared by the engine (which may mark it overtaken) and the writer
/// (which decides it).
#[derive(Debug)]
pub struct Placement {
    id: InvocationId,
    /// A message taken in from the inbox joined the key's queue behind this send before the
    /// send was decided: it may have left the inbox before the writer's read, yet was
    /// accepted first, so the send goes behind it through the inbox.
    overtaken: AtomicBool,
    /// Decided for the inbox. Set before the commit that writes it (again on a retry), so
    /// whoever reads the message from the inbox finds it set.
    moved: AtomicBool,
    /// Its batch was answered.
    decided: AtomicBool,
}

impl Placement {
    /// The placement of new invocation `id`.
    pub(crate) fn new(id: InvocationId) -> Self {
        Self {
            id,
            overtaken: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            decided: AtomicBool::new(false),
        }
    }

    /// The invocation placed.
    pub fn id(&self) -> InvocationId {
        self.id
    }

    /// See the field `overtaken`.
    pub(crate) fn overtake(&self) {
        self.overtaken.store(true, Ordering::SeqCst);
    }

    fn overtaken(&self) -> bool {
        self.overtaken.load(Ordering::SeqCst)
    }

    /// Its batch was answered: committed (as decided) or refused (then nothing was written,
    /// and the copy in memory is lost with its batch).
    pub(crate) fn settle(&self, committed: bool) {
        if !committed {
            self.moved.store(false, Ordering::SeqCst);
        }
        self.decided.store(true, Ordering::SeqCst);
    }

    /// Whether it went into the inbox (final once its batch's commit is answered).
    pub(crate) fn moved(&self) -> bool {
        self.moved.load(Ordering::SeqCst)
    }

    /// Whether its batch was answered.
    pub(crate) fn settled(&self) -> bool {
        self.decided.load(Ordering::SeqCst)
    }
}

/// Decides the placements of a batch (or a group of batches, `ops` in their order), from
/// whether messages wait in the inbox for each one's key (`waiting`, in the placements'
/// order, read after they were queued): one goes into the inbox when they do, when it was
/// overtaken (read after `waiting`: an overtaking message gone from the inbox by then had
/// marked it), or when a message for its key goes there earlier in `ops` (a placement moved,
/// or any other). Each moved one's record write becomes its message.
pub(crate) fn decide(
    placements: &[Arc<Placement>],
    waiting: &[bool],
    ops: &mut [WriteOp],
) -> Result<(), StorageError> {
    let placed: HashMap<InvocationId, (&Arc<Placement>, bool)> = (placements.iter())
        .zip(waiting)
        .map(|(p, waiting)| (p.id, (p, *waiting)))
        .collect();
    let mut behind = BTreeSet::new();
    for op in ops.iter_mut() {
        let id = match op {
            WriteOp::Forward { id, .. } => {
                behind.insert(id.partition_key());
                continue;
            }
            WriteOp::PutInvocation { id, .. } => *id,
            _ => continue,
        };
        let Some((placement, waiting)) = placed.get(&id) else {
            continue;
        };
        let to_inbox = *waiting || placement.overtaken() || behind.contains(&id.partition_key());
        placement.moved.store(to_inbox, Ordering::SeqCst);
        if let (true, WriteOp::PutInvocation { encoded, .. }) = (to_inbox, &*op) {
            let record: InvocationRecord = records::decode(encoded)?;
            *op = WriteOp::forward(id, &InboxMessage::Invoke(Box::new(record)));
            behind.insert(id.partition_key());
        }
    }
    Ok(())
}

//! Slots of a bounded pace of loads from disk (invocations restored at a start, timers'
//! wake-ups): a loaded invocation holds its slot while it is in memory, and each pool counts
//! the loads waiting for one of its slots. A holder that only waits (on a call, a promise, an
//! awakeable) while a load of its pool waits suspends at once instead of after
//! `suspend_after`, giving its slot up: what it waits for is often the invocation that wants
//! the slot (a callee restored after its caller).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// A pool of slots and the count of loads waiting for one.
#[derive(Clone)]
pub(crate) struct Pool {
    slots: Arc<Semaphore>,
    waiting: Arc<watch::Sender<usize>>,
}

/// One slot of a [`Pool`], given back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    waiting: watch::Receiver<usize>,
}

impl Pool {
    /// A pool of `slots` slots (at least one).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: Arc::new(watch::channel(0).0),
        }
    }

    /// A slot if one is free now.
    pub(crate) fn try_take(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// A slot once one is free, counted as waiting until then (also when the wait is given
    /// up). `None` never happens while the pool lives (its semaphore is never closed).
    pub(crate) async fn take(&self) -> Option<Slot> {
        if let Some(slot) = self.try_take() {
            return Some(slot);
        }
        let _waiting = Waiting::new(&self.waiting);
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(self.slot(permit))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: permit,
            waiting: self.waiting.subscribe(),
        }
    }
}

impl Slot {
    /// The count of loads waiting for a slot of this one's pool, watched: `> 0` while any
    /// waits.
    pub(crate) fn wanted(&self) -> watch::Receiver<usize> {
        self.waiting.clone()
    }
}

/// One load counted as waiting until dropped.
struct Waiting<'a>(&'a watch::Sender<usize>);

impl<'a> Waiting<'a> {
    fn new(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_is_counted_while_it_waits_and_not_after() {
        let pool = Pool::new(1);
        let held = pool.take().await.unwrap();
        let mut wanted = held.wanted();
        assert_eq!(
            *wanted.borrow_and_update(),
            0,
            "a free slot is taken without waiting"
        );
        let other = Pool::new(1);
        let other_held = other.take().await.unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await.map(drop) }
        });
        wanted.wait_for(|n| *n == 1).await.unwrap();
        assert_eq!(*other_held.wanted().borrow(), 0, "another pool's count");
        drop(held);
        waiting.await.unwrap().unwrap();
        let held = pool.take().await.unwrap();
        let mut wanted = held.wanted();
        assert_eq!(*wanted.borrow_and_update(), 0);
        // A wait given up (the load's task dropped) stops counting too.
        let given_up = tokio::spawn({
            let pool = pool.clone();
            async move { pool.take().await.map(drop) }
        });
        wanted.wait_for(|n| *n == 1).await.unwrap();
        given_up.abort();
        wanted.wait_for(|n| *n == 0).await.unwrap();
    }
}

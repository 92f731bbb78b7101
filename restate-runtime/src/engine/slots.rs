//! Who waits for a slot of the bounded loads from disk (invocations restored at a start,
//! timers' wake-ups): a loaded invocation holds its slot while it is in memory, and one that
//! only waits (on a call, a timer, a promise) while others want a slot suspends at once
//! instead of after `suspend_after`, giving the slot up. What it waits for is often the
//! invocation that wants it: a callee restored after its caller.

use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, watch};

/// The count of loads waiting for a slot, watched by the invocations that hold one.
pub(crate) struct SlotWaiters(watch::Sender<usize>);

impl Default for SlotWaiters {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl SlotWaiters {
    /// A slot of `slots`, counted as wanted for as long as it is waited for.
    pub(crate) async fn acquire(
        &self,
        slots: &Arc<Semaphore>,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let _wanting = Wanting::new(&self.0);
        slots.clone().acquire_owned().await
    }

    /// Changes whenever a load starts or stops waiting; `*borrow() > 0` while any waits.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.0.subscribe()
    }
}

/// One load counted as waiting until dropped (also when its wait is given up).
struct Wanting<'a>(&'a watch::Sender<usize>);

impl<'a> Wanting<'a> {
    fn new(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_is_counted_while_it_waits_and_not_after() {
        let waiters = SlotWaiters::default();
        let slots = Arc::new(Semaphore::new(1));
        let mut seen = waiters.watch();
        let held = waiters.acquire(&slots).await.unwrap();
        assert_eq!(
            *seen.borrow_and_update(),
            0,
            "a free slot is taken without waiting"
        );
        let waiters = Arc::new(waiters);
        let waiting = tokio::spawn({
            let (waiters, slots) = (waiters.clone(), slots.clone());
            async move { waiters.acquire(&slots).await.map(drop) }
        });
        seen.wait_for(|n| *n == 1).await.unwrap();
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(*seen.borrow_and_update(), 0);
        // A wait given up (the load's task dropped) stops counting too.
        let held = waiters.acquire(&slots).await.unwrap();
        let given_up = tokio::spawn({
            let (waiters, slots) = (waiters.clone(), slots.clone());
            async move { waiters.acquire(&slots).await.map(drop) }
        });
        seen.wait_for(|n| *n == 1).await.unwrap();
        given_up.abort();
        seen.wait_for(|n| *n == 0).await.unwrap();
        drop(held);
    }
}

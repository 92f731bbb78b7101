//! Where the engine's tasks run: on the tokio runtime the engine was started in. Under a test
//! runtime ([`crate::testing`]) they are also counted while they have something to do, so a
//! test can tell when nothing more can happen without time passing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Spawns the engine's tasks.
#[derive(Clone, Debug)]
pub(crate) struct Tasks {
    runtime: tokio::runtime::Handle,
    activity: Option<Arc<Activity>>,
}

impl Tasks {
    /// On the current tokio runtime; counted in `activity` when given.
    pub(crate) fn current(activity: Option<Arc<Activity>>) -> Self {
        Self {
            runtime: tokio::runtime::Handle::current(),
            activity,
        }
    }

    /// Runs `task` in the background; its output is dropped.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.activity {
            None => drop(self.runtime.spawn(task)),
            Some(activity) => {
                let task = async move {
                    task.await;
                };
                drop(self.runtime.spawn(Counted::new(task, activity.clone())));
            }
        }
    }

    /// The work counters, under a test runtime.
    pub(crate) fn activity(&self) -> Option<&Arc<Activity>> {
        self.activity.as_ref()
    }

    /// Lets other tasks run before going on. tokio's own yield hands its wake-up to the
    /// worker for later, uncounted; a counted task wakes itself at once instead, so that it
    /// stays busy for a test runtime in between.
    pub(crate) async fn yield_now(&self) {
        if self.activity.is_none() {
            return tokio::task::yield_now().await;
        }
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if std::mem::replace(&mut yielded, true) {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
    }
}

/// What the engine is doing right now, as a test runtime sees it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Tasks spawned or woken and not yet through the poll that follows.
    scheduled: AtomicUsize,
    /// `ctx.run` closures executing: their futures may wait on anything (a socket, a thread).
    runs: AtomicUsize,
    /// Notified whenever either count falls to zero.
    quiet: tokio::sync::Notify,
}

impl Activity {
    /// Something runs or is about to. Read closures first, tasks last: a closure ends inside
    /// its task's poll, which counts until the poll ends.
    pub(crate) fn busy(&self) -> bool {
        self.runs.load(Ordering::SeqCst) > 0 || self.scheduled.load(Ordering::SeqCst) > 0
    }

    /// Resolves the next time a count falls to zero (create it before looking at the counts).
    pub(crate) fn quieter(&self) -> tokio::sync::futures::Notified<'_> {
        self.quiet.notified()
    }

    fn uncount_task(&self) {
        if self.scheduled.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// (tasks scheduled, closures running), to say what a wait that never ends waits for.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.scheduled.load(Ordering::SeqCst),
            self.runs.load(Ordering::SeqCst),
        )
    }

    /// Counts a `ctx.run` closure as running until the guard is dropped.
    pub(crate) fn running_closure(self: &Arc<Self>) -> RunGuard {
        self.runs.fetch_add(1, Ordering::SeqCst);
        RunGuard(self.clone())
    }
}

/// See [`Activity::running_closure`].
pub(crate) struct RunGuard(Arc<Activity>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.0.runs.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// Takes one scheduled task off the count when dropped.
struct Uncount(Arc<Activity>);

impl Drop for Uncount {
    fn drop(&mut self) {
        self.0.uncount_task();
    }
}

/// A task whose wake-ups are counted in [`Activity::scheduled`] until it is polled.
struct Counted {
    task: Pin<Box<dyn Future<Output = ()> + Send>>,
    wake: Arc<CountingWake>,
}

struct CountingWake {
    activity: Arc<Activity>,
    /// Woken (or new) and not yet polled.
    scheduled: AtomicBool,
    /// False once the task is gone: a waker kept somewhere past its task counts nothing.
    alive: AtomicBool,
    /// tokio's waker of the task.
    inner: Mutex<Option<Waker>>,
}

impl Counted {
    fn new(task: impl Future<Output = ()> + Send + 'static, activity: Arc<Activity>) -> Self {
        activity.scheduled.fetch_add(1, Ordering::SeqCst);
        Self {
            // Outside tokio's cooperative budget: a task out of budget is woken later by the
            // worker, which no count would see.
            task: Box::pin(tokio::task::unconstrained(task)),
            wake: Arc::new(CountingWake {
                activity,
                scheduled: AtomicBool::new(true),
                alive: AtomicBool::new(true),
                inner: Mutex::new(None),
            }),
        }
    }
}

impl Future for Counted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Uncounted only once the poll is over (or has panicked): while it runs, it is busy.
        let _polled = self
            .wake
            .scheduled
            .swap(false, Ordering::SeqCst)
            .then(|| Uncount(self.wake.activity.clone()));
        *self.wake.inner.lock().expect("waker lock") = Some(cx.waker().clone());
        let waker = Waker::from(self.wake.clone());
        self.task.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.wake.alive.store(false, Ordering::SeqCst);
        if self.wake.scheduled.swap(false, Ordering::SeqCst) {
            self.wake.activity.uncount_task();
        }
    }
}

impl Wake for CountingWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.alive.load(Ordering::SeqCst) && !self.scheduled.swap(true, Ordering::SeqCst) {
            self.activity.scheduled.fetch_add(1, Ordering::SeqCst);
            // The task may have ended between the two checks: take the count back.
            if !self.alive.load(Ordering::SeqCst) && self.scheduled.swap(false, Ordering::SeqCst) {
                self.activity.uncount_task();
            }
        }
        if let Some(waker) = self.inner.lock().expect("waker lock").as_ref() {
            waker.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_task_counts_from_spawn_until_it_waits_and_again_once_woken() {
        let activity = Arc::new(Activity::default());
        let tasks = Tasks::current(Some(activity.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _ = rx.await;
            let _ = done_tx.send(());
        });
        assert!(activity.busy(), "a spawned task is busy until first polled");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while activity.busy() {
            assert!(std::time::Instant::now() < deadline, "never idle");
            tokio::task::yield_now().await;
        }
        tx.send(()).unwrap();
        assert!(activity.busy(), "woken, not yet polled");
        done_rx.await.unwrap();
        while activity.busy() {
            assert!(
                std::time::Instant::now() < deadline,
                "never idle after its end"
            );
            tokio::task::yield_now().await;
        }
        let run = activity.running_closure();
        assert!(activity.busy());
        drop(run);
        assert!(!activity.busy());
    }
}

//! Faults on demand: failing or panicking `ctx.run` steps, and a crash right after a given
//! commit.

use super::TestRuntime;
use crate::engine::RunFault;

impl TestRuntime {
    /// The next `times` attempts of every `ctx.run` step named `step` do `fault` instead of
    /// running their closure (faults already queued for that name come first). A replayed
    /// step is not an attempt: its journaled result stands.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Payments;
    /// # #[service]
    /// # impl Payments {
    /// #     #[handler]
    /// #     async fn pay(&self, ctx: Context<'_>) -> HandlerResult<()> {
    /// #         ctx.run(|| async { Ok(()) }).name("charge").await?;
    /// #         Ok(())
    /// #     }
    /// # }
    /// # async fn demo() {
    /// use restate_runtime::testing::{RunFault, TestRuntime};
    /// let t = TestRuntime::builder().bind(Payments).build().await;
    /// t.fail_run("charge", 3, RunFault::Retryable);
    /// let id = t.handle().client::<Payments>().pay().send().await.unwrap().invocation_id();
    /// t.advance(std::time::Duration::from_secs(60)).await; // the retries' backoff
    /// assert_eq!(t.invocation(id).unwrap().status(), "completed");
    /// assert!(t.unused_run_faults().is_empty(), "every injected failure happened");
    /// # }
    /// ```
    ///
    /// Step names are known only as steps run: a name no step has (a typo) injects nothing,
    /// and its faults wait; [`TestRuntime::unused_run_faults`] lists them.
    pub fn fail_run(&self, step: &str, times: usize, fault: RunFault) {
        self.injected.add(step, times, fault);
    }

    /// The faults [`TestRuntime::fail_run`] queued that no attempt has taken yet: (step name,
    /// how many), by name. A test asserts it empty to know its failures happened: a misspelt
    /// step name, or a step that never ran, leaves its faults here.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// use restate_runtime::testing::RunFault;
    /// t.fail_run("chrage", 2, RunFault::Retryable); // no step has that name
    /// t.run_until_idle().await;
    /// assert_eq!(t.unused_run_faults(), [("chrage".to_owned(), 2)]);
    /// # }
    /// ```
    pub fn unused_run_faults(&self) -> Vec<(String, usize)> {
        self.injected.unused_runs()
    }

    /// Crashes the runtime right after the `n`-th commit from now (1: the next) is durable, as
    /// a SIGKILL would: nothing written after it reaches the store, and the engine's next write
    /// fails ([`TestRuntime::crashed`] says so at once). [`TestRuntime::restart`] recovers. A
    /// commit is one batch of writes, of one invocation's step or of several (on a
    /// [`data_dir`](super::TestRuntimeBuilder::data_dir) folder: one group synced to its log,
    /// so the counts of the two stores differ; a test that crashes after each commit loops
    /// until a run needs no crash).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Steps;
    /// # #[service]
    /// # impl Steps {
    /// #     #[handler]
    /// #     async fn two(&self, ctx: Context<'_>) -> HandlerResult<()> {
    /// #         ctx.run(|| async { Ok(()) }).name("first").await?;
    /// #         ctx.run(|| async { Ok(()) }).name("second").await?;
    /// #         Ok(())
    /// #     }
    /// # }
    /// # async fn demo() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Steps).build().await;
    /// t.crash_after_commits(2); // the invocation, then its first step
    /// let id = t.handle().client::<Steps>().two().send().await.unwrap().invocation_id();
    /// t.run_until_idle().await;
    /// assert!(t.crashed());
    /// t.restart().await;
    /// t.run_until_idle().await;
    /// assert_eq!(t.invocation(id).unwrap().run_names(), ["first", "second"]);
    /// # }
    /// ```
    pub fn crash_after_commits(&self, n: u64) {
        self.store.kill_after_commits(n);
    }

    /// Crashes the runtime, as a SIGKILL would, the `pass`-th time from now (1: the next) the
    /// engine passes the crash point `point`: the moments the process-level crash tests kill
    /// a process at (`RESTATE_FAILPOINTS`), shared by both. Nothing the engine writes after it
    /// reaches the store, and no `ctx.run` closure starts; [`TestRuntime::restart`] recovers.
    ///
    /// | point | the moment |
    /// |---|---|
    /// | `suspend.committed` | a suspension is durable; the invocation has not left memory yet |
    /// | `wake.committed` | a completion and its wake-ups are durable; waiters not resumed yet |
    /// | `resume.loaded` | a suspended (or due delayed) invocation is back in memory; not run yet |
    /// | `delayed.parked` | a delayed invocation, durable, has left memory; its timer is armed |
    /// | `cancel.recorded` | a handler's `ctx.cancel` is durable; not delivered to its target yet |
    /// | `cancel.delivered` | a cancellation delivered to a caller waiting on a call is durable, with the callee's cancel request; not delivered to the callee yet |
    /// | `kill.propagated` | a killed invocation's end is durable, with its callees' cancellation requests; the callees are not killed yet |
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// t.crash_at("suspend.committed", 1);
    /// t.advance(std::time::Duration::from_secs(60)).await; // something suspends
    /// assert!(t.crashed());
    /// t.restart().await;
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// For an unknown point.
    pub fn crash_at(&self, point: &str, pass: u64) {
        self.injected.crash_at(point, pass);
    }

    /// Whether the running engine's store has failed: after an injected crash, until
    /// [`TestRuntime::restart`].
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// if t.crashed() {
    ///     t.restart().await;
    /// }
    /// # }
    /// ```
    pub fn crashed(&self) -> bool {
        // The injected faults know of a kill (a crash point, or after a commit); a failed
        // store is the other way an engine stops.
        self.injected.crashed() || self.with_live(|live| live.storage.failure().borrow().is_some())
    }
}

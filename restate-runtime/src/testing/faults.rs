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
    /// # }
    /// ```
    pub fn fail_run(&self, step: &str, times: usize, fault: RunFault) {
        self.injected.add(step, times, fault);
    }

    /// Crashes the runtime right after the `n`-th commit from now (1: the next) is durable, as
    /// a SIGKILL would: nothing written after it reaches the store, and the engine's next write
    /// fails ([`TestRuntime::crashed`] says so at once). [`TestRuntime::restart`] recovers. A
    /// commit is one batch of writes, of one invocation's step or of several.
    ///
    /// # Panics
    ///
    /// On a test runtime built with [`TestRuntimeBuilder::data_dir`](super::TestRuntimeBuilder::data_dir).
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
        self.with_live(|live| self.store.crashed(&live.opened))
    }
}

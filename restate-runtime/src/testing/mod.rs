//! Testing services: the real engine in-process, on a virtual clock and an in-memory store,
//! with crashes on demand.
//!
//! A handler that sends a reminder after a day, retries a payment five times or waits for a
//! click is tested in milliseconds: [`TestRuntime::advance`] moves the clock and fires every
//! timer, delayed send and retry backoff that falls due, in order; [`TestRuntime::restart`]
//! drops every task and everything in memory, keeps the store and recovers, as after a
//! SIGKILL. The generated typed clients work unchanged on [`TestRuntime::handle`].
//!
//! ```standalone_crate
//! use std::time::Duration;
//! use restate_runtime::prelude::*;
//! use restate_runtime::testing::TestRuntime;
//!
//! #[derive(Default)]
//! pub struct Reminder;
//!
//! #[object]
//! impl Reminder {
//!     /// Waits a day, then counts a reminder.
//!     #[handler]
//!     async fn remind(&self, ctx: ObjectContext<'_>) -> HandlerResult<u32> {
//!         ctx.sleep(Duration::from_secs(24 * 3600)).await?;
//!         let sent = ctx.get::<u32>("sent").await?.unwrap_or(0) + 1;
//!         ctx.set("sent", sent);
//!         Ok(sent)
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() {
//! let t = TestRuntime::builder().bind(Reminder).build().await;
//! let reminder = t.handle().object::<Reminder>("invoice-1");
//! let sent = reminder.remind().send().await.unwrap();
//! t.advance(Duration::from_secs(23 * 3600)).await;
//! t.restart().await; // a crash while it sleeps loses nothing
//! t.advance(Duration::from_secs(3600)).await;
//! let count: u32 = t.handle().attach(sent).await.unwrap();
//! assert_eq!(count, 1);
//! # }
//! ```

mod builder;
mod faults;
mod incarnation;
mod inspect;
mod listeners;
mod ports;
#[cfg(feature = "postgres")]
mod postgres;
mod store;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::filter::InvocationFilter;
pub use builder::TestRuntimeBuilder;
pub use inspect::InvocationView;
pub use ports::free_loopback_port;
#[cfg(feature = "postgres")]
pub use postgres::{ClusterError, PostgresCluster};

pub use crate::engine::RunFault;
use incarnation::Incarnation;

use crate::clock::{VirtualClock, millis};
use crate::engine::{EngineRef, InjectedFaults};
use crate::runtime::{Assembled, Port, RuntimeHandle};

/// How long [`TestRuntime::run_until_idle`] waits for a quiet moment before it gives up.
pub const IDLE_PATIENCE: Duration = Duration::from_secs(120);

/// The engine with every registered service, on a virtual clock and an in-memory store; built
/// by [`TestRuntime::builder`]. Every method takes `&self`, so one value serves a whole test,
/// also from several tasks of a multi-threaded `#[tokio::test]`.
///
/// The engine runs on tokio worker threads of its own; a test needs no paused tokio clock.
/// Work a handler waits for outside the runtime (a socket, a thread) belongs inside
/// `ctx.run`: [`TestRuntime::run_until_idle`] then waits for it too.
pub struct TestRuntime {
    assembled: Assembled,
    clock: Arc<VirtualClock>,
    store: store::TestStore,
    /// The sockets of the ports asked for, kept across restarts.
    ports: listeners::Ports,
    auto_advance: Arc<AtomicBool>,
    /// Held by `advance` and `restart`: time skipping waits meanwhile.
    driver_paused: Arc<AtomicUsize>,
    /// Failures waiting for `ctx.run` steps, kept across restarts.
    injected: Arc<InjectedFaults>,
    /// Handles reach the running engine through this; each new engine adopts it.
    reference: EngineRef,
    live: Mutex<Option<Incarnation>>,
    /// Held by `advance`, `run_until_idle` and `restart`: one at a time, so that none of them
    /// finds the engine swapped under it; overlapping calls wait their turn.
    control: tokio::sync::Mutex<()>,
}

impl TestRuntime {
    /// A builder: register services with `bind` (or through `inventory`, as for
    /// [`Runtime`](crate::Runtime)), set options, then `build().await`.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().build().await;
    /// assert_eq!(t.now(), TestRuntime::default_start());
    /// # }
    /// ```
    pub fn builder() -> TestRuntimeBuilder {
        TestRuntimeBuilder::new()
    }

    /// Where the virtual clock starts unless [`TestRuntimeBuilder::start_at`] says otherwise:
    /// 2025-01-01T00:00:00Z.
    ///
    /// ```no_run
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use restate_runtime::testing::TestRuntime;
    /// assert_eq!(TestRuntime::default_start(), UNIX_EPOCH + Duration::from_secs(1_735_689_600));
    /// ```
    pub fn default_start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_735_689_600)
    }

    /// Invokes services in-process through their typed clients, as
    /// [`Runtime::handle`](crate::Runtime::handle) does. A handle, and the invocation handles
    /// it gives, reach the engine running at each call: they work across
    /// [`TestRuntime::restart`] (a call in flight at the crash fails, as over a dropped
    /// connection).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Greeter).build().await;
    /// let greeting = t.handle().client::<Greeter>().greet("Ada".into()).call().await.unwrap();
    /// assert_eq!(greeting, "Hello Ada");
    /// # }
    /// ```
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle::following(self.reference)
    }

    /// Now, by the virtual clock: what `ctx.now()` answers and sleeps are measured against.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().build().await;
    /// t.advance(Duration::from_secs(90)).await;
    /// assert_eq!(t.now(), TestRuntime::default_start() + Duration::from_secs(90));
    /// # }
    /// ```
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clock.now_ms())
    }

    /// Moves the clock forward by `by`, stepping through each due time on the way in order
    /// (timers, delayed sends, retry backoffs, suspensions; also those created during the
    /// advance), letting everything that can run run at each step, and returns once the
    /// runtime is idle at the end. Finished invocations whose retention ends meanwhile are
    /// forgotten.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Napper;
    /// # #[service]
    /// # impl Napper {
    /// #     #[handler]
    /// #     async fn nap(&self, ctx: Context<'_>, secs: u64) -> HandlerResult<u64> {
    /// #         ctx.sleep(std::time::Duration::from_secs(secs)).await?;
    /// #         Ok(secs)
    /// #     }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Napper).build().await;
    /// let nap = t.handle().client::<Napper>().nap(3600).send().await.unwrap().invocation_id();
    /// t.advance(Duration::from_secs(3599)).await;
    /// assert!(t.handle().invocation(nap).output().await.unwrap().is_none());
    /// t.advance(Duration::from_secs(1)).await;
    /// assert_eq!(t.handle().invocation(nap).output().await.unwrap(), Some(3600.into()));
    /// # }
    /// ```
    pub async fn advance(&self, by: Duration) {
        let _one = self.control.lock().await;
        let _paused = self.pause_driver();
        let target = self.clock.now_ms().saturating_add(millis(by));
        loop {
            self.until_idle().await;
            let at = match self.clock.next_due() {
                Some(at) if at <= target => at,
                _ => target,
            };
            self.clock.set(at);
            // Retention ends in order with the rest: a duplicate due after an expiry finds
            // the original forgotten, as it would in production.
            self.engine().purge_due().await;
            if at == target {
                break;
            }
        }
        self.until_idle().await;
    }

    /// Returns once nothing can run without time passing: every invocation has finished or
    /// waits (on a timer, a call, an awakeable, a promise, its key), nothing is being written,
    /// and no `ctx.run` closure is executing. A handler that awaits something outside the
    /// runtime and outside `ctx.run` (a tokio timer, a socket) looks idle while it waits, as
    /// the runtime cannot tell that wait from one on its own timers: such work belongs inside
    /// `ctx.run`, whose closures it waits for.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Greeter).build().await;
    /// let id = t.handle().client::<Greeter>().greet("Ada".into()).send().await.unwrap().invocation_id();
    /// t.run_until_idle().await;
    /// let output = t.handle().invocation(id).output().await.unwrap();
    /// assert_eq!(output, Some("Hello Ada".into()));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// After [`IDLE_PATIENCE`] without a quiet moment, saying what is still busy: a `ctx.run`
    /// closure that does not end, a handler that keeps running without awaiting (a busy
    /// loop), or a bug.
    pub async fn run_until_idle(&self) {
        let _one = self.control.lock().await;
        self.until_idle().await;
    }

    async fn until_idle(&self) {
        let probe = self.with_live(Incarnation::probe);
        let started = std::time::Instant::now();
        loop {
            if probe.idle() {
                // Once more after letting other tasks run: a wake-up on its way is counted
                // before it is delivered, so two quiet looks in a row mean quiet.
                tokio::task::yield_now().await;
                if probe.idle() {
                    return;
                }
            }
            assert!(
                started.elapsed() < IDLE_PATIENCE,
                "the test runtime never became idle: {}",
                probe.describe()
            );
            probe.settle().await;
        }
    }

    /// Time skipping: while on, whenever the runtime is idle and something is due later, the
    /// clock jumps straight to it. A test that awaits a day-long workflow's result then returns
    /// at once.
    ///
    /// A handler that keeps failing is retried through its whole policy in no time, then
    /// paused (70 attempts by default, as in production), and a `call()` or `attach()` of it
    /// waits for a resume that never comes: test such a handler with `send()`, then
    /// [`TestRuntime::run_until_idle`] and the status of [`TestRuntime::invocation`]
    /// (`"paused"`).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Napper;
    /// # #[service]
    /// # impl Napper {
    /// #     #[handler]
    /// #     async fn nap(&self, ctx: Context<'_>, secs: u64) -> HandlerResult<u64> {
    /// #         ctx.sleep(std::time::Duration::from_secs(secs)).await?;
    /// #         Ok(secs)
    /// #     }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Napper).build().await;
    /// t.auto_advance(true);
    /// let slept = t.handle().client::<Napper>().nap(86_400).call().await.unwrap();
    /// assert_eq!(slept, 86_400);
    /// assert!(t.now() >= TestRuntime::default_start() + std::time::Duration::from_secs(86_400));
    /// # }
    /// ```
    pub fn auto_advance(&self, on: bool) {
        self.auto_advance.store(on, Ordering::SeqCst);
        if on {
            self.with_live(|live| self.drive_clock(live));
        }
    }

    /// A crash: every task and everything in memory is dropped, as by a SIGKILL (writes not
    /// yet answered may or may not have landed), the store is kept, and a new engine recovers
    /// from it. The virtual clock keeps its time; the ingress (if served) keeps its address.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Counter;
    /// # #[object]
    /// # impl Counter {
    /// #     #[handler]
    /// #     async fn add(&self, ctx: ObjectContext<'_>, n: i64) -> HandlerResult<i64> {
    /// #         let v = ctx.get::<i64>("v").await?.unwrap_or(0) + n;
    /// #         ctx.set("v", v);
    /// #         Ok(v)
    /// #     }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Counter).build().await;
    /// t.handle().object::<Counter>("a").add(2).call().await.unwrap();
    /// t.restart().await;
    /// assert_eq!(t.handle().object::<Counter>("a").add(3).call().await.unwrap(), 5);
    /// # }
    /// ```
    ///
    /// A restart that overlaps [`TestRuntime::advance`] or [`TestRuntime::run_until_idle`]
    /// waits for it, and they for the restart. Once begun, a restart leaves a new engine
    /// running even if its future is dropped (the declared schedules are then brought in step
    /// at the next restart). The inspection methods ([`TestRuntime::invocation`] and the like)
    /// panic while it runs.
    pub async fn restart(&self) {
        self.restart_after(Duration::ZERO).await;
    }

    /// A crash followed by `downtime` with no process running: the virtual clock moves on
    /// while nothing fires, then a new engine recovers as in [`TestRuntime::restart`]. Timers
    /// that fell due meanwhile fire late, at once, and schedules see the ticks they missed
    /// (their [`CatchUp`](crate::CatchUp) policy decides).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Napper;
    /// # #[service]
    /// # impl Napper {
    /// #     #[handler]
    /// #     async fn nap(&self, ctx: Context<'_>, secs: u64) -> HandlerResult<u64> {
    /// #         ctx.sleep(std::time::Duration::from_secs(secs)).await?;
    /// #         Ok(secs)
    /// #     }
    /// # }
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().bind(Napper).build().await;
    /// let nap = t.handle().client::<Napper>().nap(60).send().await.unwrap().invocation_id();
    /// let before = t.now();
    /// t.restart_after(Duration::from_secs(3600)).await;
    /// assert_eq!(t.now(), before + Duration::from_secs(3600));
    /// t.run_until_idle().await;
    /// assert_eq!(t.handle().invocation(nap).output().await.unwrap(), Some(60.into()));
    /// # }
    /// ```
    pub async fn restart_after(&self, downtime: Duration) {
        let _one = self.control.lock().await;
        self.crash_and_recover(downtime).await;
        if let Err(e) = crate::schedules::sync_declared(&self.handle()).await {
            panic!("the test runtime could not bring its declared schedules in step: {e}");
        }
    }

    /// The crash, the downtime and the recovery, without waiting on the new engine.
    async fn crash_and_recover(&self, downtime: Duration) {
        let paused = self.pause_driver();
        let old = self.live.lock().expect("test runtime lock").take();
        if let Some(old) = &old {
            old.freeze();
        }
        // Fenced next: nothing the old engine still does reaches the store.
        self.store.kill();
        let mut recovery = Recovery {
            t: self,
            downtime: Some(downtime),
            stopped: old.map(Incarnation::stop),
            _paused: paused,
        };
        if let Some(stopped) = &mut recovery.stopped {
            let _ = stopped.await;
        }
        recovery.finish();
    }

    /// Recovery after the old engine stopped: the downtime passes, a new engine starts.
    fn recover(&self, downtime: Duration) {
        self.clock
            .set(self.clock.now_ms().saturating_add(millis(downtime)));
        self.injected.recovered();
        let new = Incarnation::start(&self.assembled, &self.hooks(), &self.store, &self.ports)
            .unwrap_or_else(|e| panic!("the test runtime could not recover: {e}"));
        new.runtime.engine().adopt_reference(self.reference);
        if self.auto_advance.load(Ordering::SeqCst) {
            self.drive_clock(&new);
        }
        *self.live.lock().expect("test runtime lock") = Some(new);
    }

    /// The ingress's base URL (`http://127.0.0.1:<port>`), when built with
    /// [`TestRuntimeBuilder::serve_ingress`]; the same after restarts.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().serve_ingress().build().await;
    /// assert!(t.ingress_url().unwrap().starts_with("http://127.0.0.1:"));
    /// assert!(TestRuntime::builder().build().await.ingress_url().is_none());
    /// # }
    /// ```
    pub fn ingress_url(&self) -> Option<String> {
        self.ports.url(Port::Ingress)
    }

    /// The admin API's base URL (`http://127.0.0.1:<port>`), when built with
    /// [`TestRuntimeBuilder::admin_addr`]; the same after restarts.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder()
    ///     .admin_addr("127.0.0.1:0".parse().unwrap())
    ///     .build()
    ///     .await;
    /// let invocations = format!("{}/invocations", t.admin_url().unwrap());
    /// # let _ = invocations;
    /// # }
    /// ```
    pub fn admin_url(&self) -> Option<String> {
        self.ports.url(Port::Admin)
    }

    /// The public webhook listener's base URL, when built with
    /// [`TestRuntimeBuilder::webhook_addr`]; the same after restarts.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder()
    ///     .webhook_addr("127.0.0.1:0".parse().unwrap())
    ///     .build()
    ///     .await;
    /// assert!(t.webhook_url().unwrap().starts_with("http://127.0.0.1:"));
    /// # }
    /// ```
    pub fn webhook_url(&self) -> Option<String> {
        self.ports.url(Port::Webhooks)
    }

    fn drive_clock(&self, live: &Incarnation) {
        live.drive_clock(
            self.clock.clone(),
            self.auto_advance.clone(),
            self.driver_paused.clone(),
        );
    }

    /// Keeps time skipping from moving the clock until the guard is dropped.
    fn pause_driver(&self) -> Paused {
        self.driver_paused.fetch_add(1, Ordering::SeqCst);
        Paused(self.driver_paused.clone())
    }

    /// `f` on the running engine (one always runs, except inside [`Self::restart`]).
    fn with_live<T>(&self, f: impl FnOnce(&Incarnation) -> T) -> T {
        let live = self.live.lock().expect("test runtime lock");
        f(live.as_ref().expect("the test runtime is restarting"))
    }

    fn hooks(&self) -> crate::engine::EngineHooks {
        crate::engine::EngineHooks {
            clock: crate::clock::Clock::Virtual(self.clock.clone()),
            activity: None,
            injected: Some(self.injected.clone()),
        }
    }

    fn engine(&self) -> crate::engine::Engine {
        self.with_live(|live| live.runtime.engine().clone())
    }
}

/// A restart between the crash and the new engine: dropped unfinished (its future was), it
/// still waits for the old engine to stop and starts the new one, so that a test runtime is
/// never left without an engine.
struct Recovery<'a> {
    t: &'a TestRuntime,
    /// `None` once the new engine started.
    downtime: Option<Duration>,
    /// Hears when the old engine has stopped; `None` once heard (or when none ran).
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    _paused: Paused,
}

/// Time skipping waits while one of these lives ([`TestRuntime::pause_driver`]).
struct Paused(Arc<AtomicUsize>);

impl Drop for Paused {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Recovery<'_> {
    fn finish(&mut self) {
        self.stopped = None;
        if let Some(downtime) = self.downtime.take() {
            self.t.recover(downtime);
        }
    }
}

impl Drop for Recovery<'_> {
    fn drop(&mut self) {
        if let Some(mut stopped) = self.stopped.take() {
            // No waiting on a future here: a short poll, the stop is bounded by its own wait.
            while let Err(tokio::sync::oneshot::error::TryRecvError::Empty) = stopped.try_recv() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.finish();
    }
}

/// Why a test runtime could not start.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// use restate_runtime::testing::{TestRuntime, TestRuntimeError};
/// // A webhook on a service nobody registered.
/// let built = TestRuntime::builder()
///     .webhook("Nobody", "here", restate_runtime::webhook::Webhook::stripe(Some("whsec_x".into())))
///     .try_build()
///     .await;
/// assert!(matches!(built, Err(TestRuntimeError::Build(_))));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestRuntimeError {
    /// The services, webhooks or options are invalid, or recovery failed.
    #[error(transparent)]
    Build(#[from] crate::BuildError),
    /// The engine's worker threads could not be started.
    #[error("cannot start the engine's threads: {0}")]
    Threads(std::io::Error),
    /// A port asked for could not be bound.
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
    /// The schedules declared with `#[handler(cron = ..)]` could not be stored.
    #[error("the declared schedules could not be stored: {0}")]
    Schedules(#[from] crate::ScheduleError),
}

impl std::fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntime")
            .field("now", &self.now())
            .field("ingress", &self.ingress_url())
            .field("admin", &self.admin_url())
            .field("webhooks", &self.webhook_url())
            .finish_non_exhaustive()
    }
}

//! The test runtime's builder: the services, webhooks and options of a
//! [`RuntimeBuilder`](crate::RuntimeBuilder), plus where the clock starts and whether the
//! ingress listens.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::incarnation::Incarnation;
use super::listeners::Ports;
use super::store::TestStore;
use super::{TestRuntime, TestRuntimeError};
use crate::Runtime;
use crate::clock::{Clock, VirtualClock, millis};
use crate::engine::{EngineHooks, InjectedFaults};
use crate::registry::Service;
use crate::runtime::RuntimeBuilder;
use crate::storage::MemoryStore;
use crate::webhook::WebhookEndpoint;

/// Builds a [`TestRuntime`]; see [`TestRuntime::builder`]. `RESTATE_*` variables are not
/// read: a test runs the same everywhere.
#[must_use]
pub struct TestRuntimeBuilder {
    runtime: RuntimeBuilder,
    start_at: SystemTime,
    serve_ingress: bool,
    ingress_addr: Option<std::net::SocketAddr>,
    admin_addr: Option<std::net::SocketAddr>,
    webhook_addr: Option<std::net::SocketAddr>,
    data_dir: Option<std::path::PathBuf>,
    #[cfg(feature = "postgres")]
    database_url: Option<String>,
}

/// Forwards option methods to the wrapped [`RuntimeBuilder`], each with a doc example.
macro_rules! forward {
    ($($name:ident($arg:ident: $ty:ty) = $example:expr;)*) => {$(
        #[doc = concat!("As [`RuntimeBuilder::", stringify!($name), "`](crate::RuntimeBuilder::", stringify!($name), ").")]
        ///
        /// ```no_run
        /// # #[allow(unused_imports)] use std::time::Duration;
        #[doc = concat!("let builder = restate_runtime::testing::TestRuntime::builder().", stringify!($name), "(", stringify!($example), ");")]
        /// ```
        pub fn $name(mut self, $arg: $ty) -> Self {
            self.runtime = self.runtime.$name($arg);
            self
        }
    )*};
}

impl TestRuntimeBuilder {
    pub(super) fn new() -> Self {
        Self {
            // Crashes are what a test runtime simulates: none pauses an invocation for
            // having been interrupted too often, unless a test asks.
            runtime: Runtime::builder()
                .without_env()
                .on_storage_failure(warn_storage_failure)
                .max_interrupted_attempts(0)
                .standing_in_for_unbound(),
            start_at: TestRuntime::default_start(),
            serve_ingress: false,
            ingress_addr: None,
            admin_addr: None,
            webhook_addr: None,
            data_dir: None,
            #[cfg(feature = "postgres")]
            database_url: None,
        }
    }

    /// As [`RuntimeBuilder::without_env`](crate::RuntimeBuilder::without_env), which a test
    /// runtime always is: it reads no `RESTATE_*` variable, so a test runs the same everywhere.
    /// Here so that code building either runtime the same way compiles for both.
    ///
    /// ```no_run
    /// let builder = restate_runtime::testing::TestRuntime::builder().without_env();
    /// ```
    pub fn without_env(self) -> Self {
        self
    }

    /// As [`RuntimeBuilder::rate_limit`](crate::RuntimeBuilder::rate_limit): the bucket
    /// `name` at `limit`, on the virtual clock.
    ///
    /// ```no_run
    /// use restate_runtime::RateLimit;
    /// let builder = restate_runtime::testing::TestRuntime::builder()
    ///     .rate_limit("email", RateLimit::per_second(25));
    /// ```
    pub fn rate_limit(mut self, name: impl Into<String>, limit: crate::RateLimit) -> Self {
        self.runtime = self.runtime.rate_limit(name, limit);
        self
    }

    /// As [`RuntimeBuilder::concurrency_limit`](crate::RuntimeBuilder::concurrency_limit).
    ///
    /// ```no_run
    /// let builder = restate_runtime::testing::TestRuntime::builder().concurrency_limit("stripe-api", 4);
    /// ```
    pub fn concurrency_limit(mut self, name: impl Into<String>, limit: u32) -> Self {
        self.runtime = self.runtime.concurrency_limit(name, limit);
        self
    }

    /// Serves `service` with this value instead of its `Default`, as
    /// [`RuntimeBuilder::bind`](crate::RuntimeBuilder::bind): give handlers test doubles. A
    /// service type without `Default` that a test does not bind does not stop the test
    /// runtime (a `Runtime` refuses to build): its calls fail with an error that says to
    /// bind it.
    ///
    /// ```no_run
    /// use restate_runtime::prelude::*;
    /// use restate_runtime::testing::TestRuntime;
    /// pub struct Mailer { outbox: std::sync::Arc<std::sync::Mutex<Vec<String>>> }
    /// #[service]
    /// impl Mailer {
    ///     #[handler]
    ///     async fn send(&self, _ctx: Context<'_>, to: String) -> HandlerResult<()> {
    ///         self.outbox.lock().unwrap().push(to);
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main]
    /// # async fn main() {
    /// let outbox: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    /// let t = TestRuntime::builder().bind(Mailer { outbox: outbox.clone() }).build().await;
    /// t.handle().client::<Mailer>().send("ada@example.com".into()).call().await.unwrap();
    /// assert_eq!(*outbox.lock().unwrap(), ["ada@example.com"]);
    /// # }
    /// ```
    pub fn bind<S: Service>(mut self, service: S) -> Self {
        self.runtime = self.runtime.bind(service);
        self
    }

    /// Makes a handler a webhook endpoint, as
    /// [`RuntimeBuilder::webhook`](crate::RuntimeBuilder::webhook).
    ///
    /// ```no_run
    /// use restate_runtime::webhook::{EventId, Webhook};
    /// let builder = restate_runtime::testing::TestRuntime::builder()
    ///     .webhook("WebhookCallbackRouter", "onStripeEvent", Webhook::unverified(EventId::JsonField("id".into())));
    /// ```
    pub fn webhook(
        mut self,
        service: &str,
        handler: &str,
        webhook: impl Into<WebhookEndpoint>,
    ) -> Self {
        self.runtime = self.runtime.webhook(service, handler, webhook);
        self
    }

    forward! {
        admin_token(token: impl Into<String>) = "secret";
        ingress_token(token: impl Into<String>) = "secret";
        max_body_bytes(bytes: usize) = 64 * 1024;
        webhook_max_body_bytes(bytes: usize) = 64 * 1024;
        default_retention(retention: Duration) = Duration::from_secs(3600);
        purge_interval(interval: Duration) = Duration::from_secs(60);
        suspend_after(after: Duration) = Duration::from_secs(1);
        max_connections(connections: usize) = 64;
        max_in_flight(requests: usize) = 64;
        header_timeout(timeout: Duration) = Duration::from_secs(5);
        body_timeout(timeout: Duration) = Duration::from_secs(5);
        writer_queue_bytes(bytes: usize) = 1 << 20;
        commit_group_bytes(bytes: usize) = 1 << 20;
        recovery_concurrency(invocations: usize) = 16;
        max_interrupted_attempts(attempts: u32) = 3;
        max_invocation_bytes(bytes: usize) = 1 << 20;
        unsent_response_bytes(bytes: usize) = 1 << 20;
        timer_window(window: Duration) = Duration::from_secs(60);
        release_heap(release: fn()) = || {};
        cache_bytes(bytes: usize) = 8 << 20;
        min_free_disk_bytes(bytes: u64) = 0;
        app_version(version: impl Into<String>) = "2";
    }

    /// The address [`Self::serve_ingress`] listens on (default: a free loopback port); alone
    /// it opens nothing.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// let t = restate_runtime::testing::TestRuntime::builder()
    ///     .ingress_addr("127.0.0.1:18080".parse().unwrap())
    ///     .serve_ingress()
    ///     .build()
    ///     .await;
    /// assert_eq!(t.ingress_url().unwrap(), "http://127.0.0.1:18080");
    /// # }
    /// ```
    pub fn ingress_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.ingress_addr = Some(addr);
        self
    }

    /// Serves the admin API (and its web UI) on `addr`, as
    /// [`RuntimeBuilder::admin_addr`](crate::RuntimeBuilder::admin_addr) does; port 0 takes a
    /// free one, and [`TestRuntime::admin_url`] says which. Without it no admin port is opened
    /// (the same views are [`TestRuntime`]'s inspection methods).
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// let t = restate_runtime::testing::TestRuntime::builder()
    ///     .admin_addr("127.0.0.1:0".parse().unwrap())
    ///     .build()
    ///     .await;
    /// let metrics = format!("{}/metrics", t.admin_url().unwrap());
    /// # let _ = metrics;
    /// # }
    /// ```
    pub fn admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// Serves the public webhook listener (verified webhooks only) on `addr`, as
    /// [`RuntimeBuilder::webhook_addr`](crate::RuntimeBuilder::webhook_addr) does; port 0
    /// takes a free one, and [`TestRuntime::webhook_url`] says which. Signatures are checked
    /// against the virtual clock: sign with [`TestRuntime::now`].
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::webhook::Webhook;
    /// let t = restate_runtime::testing::TestRuntime::builder()
    ///     .webhook("Payments", "onEvent", Webhook::stripe(Some("whsec_test".into())))
    ///     .webhook_addr("127.0.0.1:0".parse().unwrap())
    ///     .build()
    ///     .await;
    /// let url = format!("{}/Payments/onEvent", t.webhook_url().unwrap());
    /// # let _ = url;
    /// # }
    /// ```
    pub fn webhook_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.webhook_addr = Some(addr);
        self
    }

    /// Headers never stored with an invocation, as
    /// [`RuntimeBuilder::secret_headers`](crate::RuntimeBuilder::secret_headers).
    ///
    /// ```no_run
    /// let builder = restate_runtime::testing::TestRuntime::builder()
    ///     .secret_headers(["x-api-key".to_owned()]);
    /// ```
    pub fn secret_headers(mut self, headers: impl IntoIterator<Item = String>) -> Self {
        self.runtime = self.runtime.secret_headers(headers);
        self
    }

    /// Keeps the store in a redb data folder instead of memory: to look at it afterwards, or to
    /// test on the production backend. Crashes are as real there: a restart, a crash point or
    /// [`TestRuntime::crash_after_commits`] stops every write of the running engine at once
    /// (its last checkpoint never runs), and the next engine recovers from the folder's log as
    /// after a SIGKILL.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// let folder = std::env::temp_dir().join("my-test-store");
    /// let t = restate_runtime::testing::TestRuntime::builder().data_dir(&folder).build().await;
    /// # }
    /// ```
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keeps the store in a PostgreSQL database instead of memory, as
    /// [`RuntimeBuilder::database_url`](crate::RuntimeBuilder::database_url) does (feature
    /// `postgres`; the schema is created at the first start): to test on that backend. It
    /// wins over [`Self::data_dir`]. Crashes are as real there: a restart, a crash point or
    /// [`TestRuntime::crash_after_commits`] stops every write of the running engine at once
    /// and cuts its sessions off, and the next engine takes the database over as after a
    /// SIGKILL. The virtual clock stays the test runtime's; the leases between processes run
    /// on the database's clock. One test runtime at a time per database
    /// ([`PostgresCluster::fresh_database`](super::PostgresCluster::fresh_database) gives each
    /// test its own).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use restate_runtime::testing::{PostgresCluster, TestRuntime};
    /// let url = PostgresCluster::shared().unwrap().fresh_database().unwrap();
    /// let t = TestRuntime::builder().database_url(url).build().await;
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// What happens once the running engine's store really fails (a commit, a sync or its
    /// writer), as [`RuntimeBuilder::on_storage_failure`](crate::RuntimeBuilder::on_storage_failure):
    /// a test that must see such a failure records it here. Never called for the failure a
    /// crash the test injected causes on purpose ([`TestRuntime::restart`], a crash point,
    /// [`TestRuntime::crash_after_commits`]). The default logs a warning; either way
    /// [`TestRuntime::crashed`] says the engine stopped, and [`TestRuntime::restart`] recovers.
    ///
    /// ```no_run
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// static FAILURES: AtomicUsize = AtomicUsize::new(0);
    /// fn count(_reason: &str) {
    ///     FAILURES.fetch_add(1, Ordering::SeqCst);
    /// }
    /// let builder = restate_runtime::testing::TestRuntime::builder().on_storage_failure(count);
    /// ```
    pub fn on_storage_failure(mut self, react: fn(&str)) -> Self {
        self.runtime = self.runtime.on_storage_failure(react);
        self
    }

    /// Where the virtual clock starts (default [`TestRuntime::default_start()`]).
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use restate_runtime::testing::TestRuntime;
    /// let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    /// let t = TestRuntime::builder().start_at(start).build().await;
    /// assert_eq!(t.now(), start);
    /// # }
    /// ```
    pub fn start_at(mut self, at: SystemTime) -> Self {
        self.start_at = at;
        self
    }

    /// Serves the ingress (Restate's HTTP API) on a free loopback port, for HTTP-level tests;
    /// [`TestRuntime::ingress_url`] says where. Without it no port is opened.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use restate_runtime::testing::TestRuntime;
    /// let t = TestRuntime::builder().serve_ingress().build().await;
    /// let health = format!("{}/restate/health", t.ingress_url().unwrap());
    /// # let _ = health;
    /// # }
    /// ```
    pub fn serve_ingress(mut self) -> Self {
        self.serve_ingress = true;
        self
    }

    /// Starts the engine (recovering nothing: the store is new).
    ///
    /// # Panics
    ///
    /// When [`Self::try_build`] fails: a test cannot go on without its runtime.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// let t = restate_runtime::testing::TestRuntime::builder().build().await;
    /// t.run_until_idle().await;
    /// # }
    /// ```
    pub async fn build(self) -> TestRuntime {
        match self.try_build().await {
            Ok(t) => t,
            Err(e) => panic!("the test runtime could not start: {e}"),
        }
    }

    /// Starts the engine, or says why it cannot (services, webhooks or options invalid).
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), restate_runtime::testing::TestRuntimeError> {
    /// let t = restate_runtime::testing::TestRuntime::builder().try_build().await?;
    /// # let _ = t; Ok(()) }
    /// ```
    pub async fn try_build(self) -> Result<TestRuntime, TestRuntimeError> {
        let assembled = self.runtime.assemble()?;
        let start_ms = millis(self.start_at.duration_since(UNIX_EPOCH).unwrap_or_default());
        let clock = Arc::new(VirtualClock::new(start_ms));
        let store = match self.data_dir {
            Some(dir) => TestStore::folder(dir),
            None => TestStore::Memory(MemoryStore::default()),
        };
        #[cfg(feature = "postgres")]
        let store = self.database_url.map_or(store, TestStore::database);
        let ingress = self.serve_ingress.then(|| {
            self.ingress_addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        });
        let ports = Ports::bind(ingress, self.admin_addr, self.webhook_addr)?;
        let injected = Arc::new({
            let (killer, counter) = (store.clone(), store.clone());
            InjectedFaults::with_store(move || killer.kill(), move || counter.kills())
        });
        let hooks = EngineHooks {
            clock: Clock::Virtual(clock.clone()),
            activity: None,
            injected: Some(injected.clone()),
        };
        let live = Incarnation::start(&assembled, &hooks, &store, &ports)?;
        let reference = live.runtime.engine().reference();
        let t = TestRuntime {
            reference,
            injected,
            assembled,
            clock,
            store,
            ports,
            auto_advance: Arc::new(AtomicBool::new(false)),
            driver_paused: Arc::default(),
            live: Mutex::new(Some(live)),
            control: tokio::sync::Mutex::new(()),
        };
        crate::schedules::sync_declared(&t.handle()).await?;
        Ok(t)
    }
}

/// A test runtime's reaction to a real storage failure unless told otherwise: a warning, and
/// nothing stops the test process (the test sees the engine stopped, `TestRuntime::crashed`).
fn warn_storage_failure(reason: &str) {
    tracing::warn!(%reason, "test runtime store failed");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static FAILURES: AtomicUsize = AtomicUsize::new(0);

    fn count(_reason: &str) {
        FAILURES.fetch_add(1, Ordering::SeqCst);
    }

    /// Gives the engine's watch on its store the time to react to a failure: that it does not,
    /// for an injected crash, has nothing to wait for.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_storage_failure_hook_hears_real_failures_not_injected_crashes() {
        let t = TestRuntime::builder()
            .on_storage_failure(count)
            .build()
            .await;
        let storage = t.with_live(|live| live.storage.clone());
        t.crash_after_commits(1);
        storage.submit(Vec::new()).await.unwrap();
        assert!(storage.submit(Vec::new()).await.is_err(), "killed");
        assert!(t.crashed());
        settle().await;
        assert_eq!(FAILURES.load(Ordering::SeqCst), 0, "an injected crash");

        t.restart().await;
        let storage = t.with_live(|live| live.storage.clone());
        storage.close();
        assert!(storage.submit(Vec::new()).await.is_err(), "closed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while FAILURES.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(FAILURES.load(Ordering::SeqCst), 1, "a real failure");
        assert!(t.crashed());
    }
}

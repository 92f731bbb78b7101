//! The runtime users build in `main`: configuration, registry, storage and engine, served over
//! HTTP or driven in-process through a [`RuntimeHandle`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{
    Caller, ClientError, ExternalRequest, HasObjectClient, HasServiceClient, HasWorkflowClient,
    IntoObjectClient, IntoServiceClient, IntoWorkflowClient, RequestParts,
};
use crate::config::{Config, ConfigError};
use crate::engine::{DrainStatus, Engine, EngineConfig, EngineError};
use crate::error::TerminalError;
use crate::handle::InvocationHandle;
use crate::ids::InvocationId;
use crate::ingress::Webhooks;
use crate::registry::{DynService, Registry, RegistryError, Service, ServiceDefinition};
use crate::replay::{ReplayCheckError, ReplayOptions, ReplayReport};
use crate::storage::{OpenError, RedbOptions, RedbStorage, Storage};
use crate::webhook::WebhookEndpoint;

/// Why a runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `RESTATE_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Services could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The data folder could not be opened.
    #[error(transparent)]
    Storage(#[from] OpenError),
    /// Recovery failed.
    #[error("recovery failed: {0}")]
    Recovery(#[from] EngineError),
    /// A webhook names a service or handler that does not exist, or would accept forged
    /// requests (a verifying scheme without a secret).
    #[error("{0}")]
    Webhook(String),
    /// `build` was called outside a tokio runtime.
    #[error("Runtime::build must be called inside a tokio runtime (e.g. from #[tokio::main])")]
    NoAsyncRuntime,
}

/// Why serving stopped with an error.
///
/// ```no_run
/// use restate_runtime::{Runtime, ServeError};
/// # async fn demo() -> anyhow::Result<()> {
/// match Runtime::builder().build()?.serve().await {
///     Err(ServeError::Bind { addr, source }) => {
///         anyhow::bail!("is another instance running on {addr}? {source}")
///     }
///     other => other?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address (from [`Config`]).
        addr: std::net::SocketAddr,
        /// What the OS reported (in use, permission denied).
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds a [`Runtime`]. Builder values are defaults; `RESTATE_*` variables override them.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = restate_runtime::Runtime::builder()
///     .data_dir("./data")
///     .ingress_addr("127.0.0.1:8080".parse()?)
///     .build()?;
/// runtime.serve().await?;
/// # Ok(()) }
/// ```
pub struct RuntimeBuilder {
    config: Config,
    /// Values bound with [`Self::bind`], by their type.
    bound: Vec<(std::any::TypeId, ServiceDefinition, DynService)>,
    read_env: bool,
    webhooks: Webhooks,
    release_heap: fn(),
    on_storage_failure: fn(&str),
    rate_limits: HashMap<String, crate::RateLimit>,
    concurrency_limits: HashMap<String, u32>,
    unbound: crate::registry::Unbound,
}

impl RuntimeBuilder {
    /// Data folder (default `./data`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// // The journal and state live here; keep it on durable, local disk.
    /// let runtime = Runtime::builder().data_dir("/var/lib/shop/restate").build()?;
    /// # Ok(()) }
    /// ```
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// A PostgreSQL database instead of a data folder (`RESTATE_DATABASE_URL` overrides it
    /// unless [`without_env`](Self::without_env)): the schema is created or migrated at
    /// start. One process runs on a database at a time; another one started on it waits for
    /// the first to stop. Needs the `postgres` feature of `restate-runtime`; without it,
    /// [`build`](Self::build) says so.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder()
    ///     .database_url("postgres://shop:secret@db.internal:5432/shop")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.config.database_url = Some(url.into());
        self
    }

    /// With a database: the `http://` URL the other processes of the deployment reach this
    /// one's ingress at (default: the bound ingress address, unless that is every interface).
    /// They relay request-response calls for the partitions this process runs to it, instead
    /// of writing them into the partition's inbox. An ingress nested in your own server
    /// ([`Runtime::ingress_router`]) is advertised only by this URL, its path included
    /// (`http://10.0.0.7:3000/durable`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder()
    ///     .database_url("postgres://shop:secret@db.internal:5432/shop")
    ///     .ingress_addr("0.0.0.0:8080".parse()?)
    ///     .advertised_ingress_url("http://10.0.0.7:8080")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn advertised_ingress_url(mut self, url: impl Into<String>) -> Self {
        self.config.advertised_ingress_url = Some(url.into());
        self
    }

    /// Ingress address (default `127.0.0.1:8080`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// // Reachable from other machines, not just loopback.
    /// let runtime = Runtime::builder().ingress_addr("0.0.0.0:8080".parse()?).build()?;
    /// # Ok(()) }
    /// ```
    pub fn ingress_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.ingress_addr = addr;
        self
    }

    /// Admin address (default `127.0.0.1:9070`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().admin_addr("127.0.0.1:19070".parse()?).build()?;
    /// assert_eq!(runtime.config().admin_addr.port(), 19070); // unless RESTATE_ADMIN_ADDR is set
    /// # Ok(()) }
    /// ```
    pub fn admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.admin_addr = addr;
        self
    }

    /// Requires `Authorization: Bearer <token>` on the admin API (all but `/health`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let token = std::env::var("ADMIN_TOKEN")?;
    /// let runtime = Runtime::builder().admin_token(token).build()?;
    /// # Ok(()) }
    /// ```
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.config.admin_token = Some(token.into());
        self
    }

    /// Largest accepted request body (default 10 MiB). Bodies are read whole before their
    /// requests take one of the requests in flight, so a slow sender holds a connection, not
    /// a slot; what each listener holds of them is 8 KiB per connection, and beyond that at
    /// most the cap on requests in flight times this, at most 64 MiB unless one body may be
    /// larger (`429` past it).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// // Larger bodies are answered with 413 before any invocation exists.
    /// let runtime = Runtime::builder().max_body_bytes(64 * 1024).build()?;
    /// # Ok(()) }
    /// ```
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// Largest body the public webhook listener reads (default 1 MiB, never above
    /// [`max_body_bytes`](Self::max_body_bytes)). Its bodies are read before the signature
    /// can be checked, and, as on every listener, before they take one of the requests in
    /// flight, so a slow sender holds no slot a signed event needs; this and the cap on
    /// requests in flight bound the memory they take.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// // GitHub sends push events of up to 25 MB.
    /// let runtime = Runtime::builder()
    ///     .webhook_max_body_bytes(25 * 1024 * 1024)
    ///     .max_body_bytes(25 * 1024 * 1024)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn webhook_max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.webhook_max_body_bytes = bytes;
        self
    }

    /// How long finished invocations keep results and idempotency keys (default 24 h).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// use std::time::Duration;
    /// // Clients may retry with the same idempotency key for a week.
    /// let runtime = Runtime::builder().default_retention(Duration::from_secs(7 * 24 * 3600)).build()?;
    /// # Ok(()) }
    /// ```
    pub fn default_retention(mut self, retention: Duration) -> Self {
        self.config.default_retention = retention;
        self
    }

    /// How often expired invocations are purged (default 1 s; `RESTATE_PURGE_INTERVAL`): an
    /// idempotency key is forgotten at most this long after its retention ends.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// use std::time::Duration;
    /// let runtime = Runtime::builder().purge_interval(Duration::from_secs(60)).build()?;
    /// # Ok(()) }
    /// ```
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.config.purge_interval = interval;
        self
    }

    /// How long a handler may wait before it is suspended (default 10 s).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// use std::time::Duration;
    /// // Free memory sooner when many handlers wait on timers or awakeables.
    /// let runtime = Runtime::builder().suspend_after(Duration::from_secs(1)).build()?;
    /// # Ok(()) }
    /// ```
    pub fn suspend_after(mut self, after: Duration) -> Self {
        self.config.suspend_after = after;
        self
    }

    /// redb page cache in bytes (default 64 MiB).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().cache_bytes(256 * 1024 * 1024).build()?;
    /// # Ok(()) }
    /// ```
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.config.cache_bytes = bytes;
        self
    }

    /// The public webhook listener's address (default off): verified webhooks only, every
    /// other path a 404. Put it behind your TLS-terminating proxy; keep the ingress private.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().webhook_addr(([0, 0, 0, 0], 8443).into()).build()?;
    /// # Ok(()) }
    /// ```
    pub fn webhook_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.webhook_addr = Some(addr);
        self
    }

    /// Requires `Authorization: Bearer <token>` on every ingress route but `/restate/health`
    /// (default: no token, for an ingress that only your own systems reach).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().ingress_token("s3cr3t").build()?;
    /// # Ok(()) }
    /// ```
    pub fn ingress_token(mut self, token: impl Into<String>) -> Self {
        self.config.ingress_token = Some(token.into());
        self
    }

    /// Connections each listener serves at once (default 4096, kept below the open-file
    /// limit, which the runtime raises to its hard limit): more are answered `429` and closed.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().max_connections(1024).build()?;
    /// # Ok(()) }
    /// ```
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections.max(1);
        self
    }

    /// Requests each listener serves at once (default 128): more wait up to a second, then
    /// are answered `429` with `Retry-After`. A request takes its slot once its body is
    /// read; times the body limit (at most 64 MiB, plus 8 KiB per connection), this bounds
    /// the memory request bodies take.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().max_in_flight(64).build()?;
    /// # Ok(()) }
    /// ```
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.config.max_in_flight = requests.max(1);
        self
    }

    /// Time for a request head to arrive (default 10 s): a connection that sends nothing, or
    /// a head byte by byte, is closed after it, and so is an idle keep-alive connection.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use std::time::Duration;
    /// let runtime = restate_runtime::Runtime::builder()
    ///     .header_timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_timeout = timeout;
        self
    }

    /// Time for a request body to arrive (default 30 s); a slower one is answered `408`.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use std::time::Duration;
    /// let runtime = restate_runtime::Runtime::builder()
    ///     .body_timeout(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// Request headers that are never stored with an invocation nor shown to its handler
    /// (default: [`DEFAULT_SECRET_HEADERS`](crate::DEFAULT_SECRET_HEADERS): credentials,
    /// cookies and webhook signatures). Signatures are checked before they are dropped.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::{DEFAULT_SECRET_HEADERS, Runtime};
    /// let mut secret: Vec<String> = DEFAULT_SECRET_HEADERS.iter().map(|h| h.to_string()).collect();
    /// secret.push("x-api-key".into());
    /// let runtime = Runtime::builder().secret_headers(secret).build()?;
    /// # Ok(()) }
    /// ```
    pub fn secret_headers(mut self, headers: impl IntoIterator<Item = String>) -> Self {
        self.config.secret_headers = headers.into_iter().collect();
        self
    }

    /// Free disk space kept for work already accepted (default 32 MiB, 0 turns the check
    /// off): below it new invocations are answered 503 `disk full` and nothing of them is
    /// written, while running and waiting invocations go on; a start waits until that much is
    /// free, logging why. Both resume by themselves once space is freed.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().min_free_disk_bytes(1 << 30).build()?;
    /// # Ok(()) }
    /// ```
    pub fn min_free_disk_bytes(mut self, bytes: u64) -> Self {
        self.config.min_free_disk_bytes = bytes;
        self
    }

    /// Bytes of writes waiting for the journal writer above which new invocations from
    /// outside are answered 429 with `Retry-After` (default 64 MiB): a burst faster than the
    /// disk then costs bounded memory. Work already accepted still commits.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().writer_queue_bytes(16 << 20).build()?;
    /// # Ok(()) }
    /// ```
    pub fn writer_queue_bytes(mut self, bytes: usize) -> Self {
        self.config.writer_queue_bytes = bytes;
        self
    }

    /// Bytes one journal commit takes at most (default 8 MiB): more waiting goes into the
    /// next commit, and a single larger write commits alone.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().commit_group_bytes(1 << 20).build()?;
    /// # Ok(()) }
    /// ```
    pub fn commit_group_bytes(mut self, bytes: usize) -> Self {
        self.config.commit_group_bytes = bytes;
        self
    }

    /// Invocations found unfinished at start that may be back in memory at once (default
    /// 256): the rest wait on disk, in arrival order, and are restored as those finish or
    /// suspend, so a restart after an overload takes bounded memory. The object and workflow
    /// keys they hold stay theirs meanwhile. The same bound holds for invocations on disk that
    /// their timers wake (delayed sends, long sleeps), so a backlog of overdue timers after
    /// downtime comes back at the pace it runs.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().recovery_concurrency(64).build()?;
    /// # Ok(()) }
    /// ```
    pub fn recovery_concurrency(mut self, invocations: usize) -> Self {
        self.config.recovery_concurrency = invocations;
        self
    }

    /// Attempts of one invocation in a row that the process may end during before the
    /// invocation is paused instead of run again (default 20; 0: never). A handler that takes
    /// its process down (an abort, a stack overflow, the OOM killer) would otherwise take down
    /// every restart with it; paused, it waits for a fix and a resume (or a kill) from the
    /// admin API. Each attempt that a restart or a takeover begins is counted in its record
    /// before it runs, and an attempt that ends (in success, a failure, a suspension) clears the
    /// count, as does one whose journal got further than the attempt before it.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().max_interrupted_attempts(5).build()?;
    /// # Ok(()) }
    /// ```
    pub fn max_interrupted_attempts(mut self, attempts: u32) -> Self {
        self.config.max_interrupted_attempts = attempts;
        self
    }

    /// Input bytes the invocations in memory may hold (default 128 MiB) before new invocations
    /// from outside are answered `429` with `Retry-After`: under a sustained overload the
    /// accepted work that runs behind then stops growing memory. A handler's own calls and
    /// sends are never refused.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().max_invocation_bytes(512 << 20).build()?;
    /// # Ok(()) }
    /// ```
    pub fn max_invocation_bytes(mut self, bytes: usize) -> Self {
        self.config.max_invocation_bytes = bytes;
        self
    }

    /// Bytes of response bodies each listener holds until their clients take them (default
    /// 128 MiB). Beyond it an attach or an output whose body is over 16 KiB is answered `429`
    /// with `Retry-After` (it can be asked for again), and an invocation's result is still
    /// sent. A body no client takes for the body timeout closes its connection.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().unsent_response_bytes(256 << 20).build()?;
    /// # Ok(()) }
    /// ```
    pub fn unsent_response_bytes(mut self, bytes: usize) -> Self {
        self.config.unsent_response_bytes = bytes;
        self
    }

    /// How far ahead timers (delayed starts, suspended sleeps) are held in memory (default
    /// 60 s); later ones wait in the store's due-time index and are read as they come near, so
    /// a million reminders due tomorrow take disk, not memory.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().timer_window(std::time::Duration::from_secs(10)).build()?;
    /// # Ok(()) }
    /// ```
    pub fn timer_window(mut self, window: Duration) -> Self {
        self.config.timer_window = window;
        self
    }

    /// The application version recorded on every invocation this process accepts, shown as
    /// `version` in the admin API (and filtered by `?version=`); `RESTATE_APP_VERSION`
    /// overrides it. Without it: the crate version plus a hash of the registered services and
    /// their handlers' signatures ([`Runtime::app_version`] tells which).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().app_version("2026-11-30.1").build()?;
    /// assert_eq!(runtime.app_version(), "2026-11-30.1");
    /// # Ok(()) }
    /// ```
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.config.app_version = Some(version.into());
        self
    }

    /// How freed heap goes back to the operating system once a burst of invocations has left
    /// memory (their number fell to a quarter of its peak). The default asks glibc's allocator
    /// (`malloc_trim`), which otherwise keeps it; a binary with another global allocator passes
    /// that allocator's equivalent, since allocators keep freed pages for reuse and an idle one
    /// may never give them back.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// fn release() {
    ///     // e.g. with jemalloc as the global allocator: the `arena.4096.purge` control
    /// }
    /// let runtime = Runtime::builder().release_heap(release).build()?;
    /// # Ok(()) }
    /// ```
    pub fn release_heap(mut self, release: fn()) -> Self {
        self.release_heap = release;
        self
    }

    /// What happens once the store fails a commit or a sync, or its writer dies. Nothing is
    /// acknowledged after that, whatever this does. The default logs the reason and ends the
    /// process with exit status 74 ([`exit_on_storage_failure`](crate::exit_on_storage_failure)),
    /// so that a supervisor restarts it and recovery starts from what is durable: after a
    /// failed fsync the OS may have dropped the written pages, so carrying on is never safe.
    /// An embedding that must clean up first passes its own function, which should end the
    /// process soon after.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// fn stop(reason: &str) {
    ///     eprintln!("journal failed: {reason}");
    ///     std::process::exit(restate_runtime::STORAGE_FAILURE_EXIT_CODE);
    /// }
    /// let runtime = Runtime::builder().on_storage_failure(stop).build()?;
    /// # Ok(()) }
    /// ```
    pub fn on_storage_failure(mut self, react: fn(&str)) -> Self {
        self.on_storage_failure = react;
        self
    }

    /// Ignores `RESTATE_*` environment variables (tests that must not be affected by them).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let dir = tempfile::tempdir()?;
    /// let runtime = Runtime::builder().data_dir(dir.path()).without_env().build()?;
    /// assert_eq!(runtime.config().data_dir, dir.path()); // whatever RESTATE_DATA_DIR says
    /// # Ok(()) }
    /// ```
    pub fn without_env(mut self) -> Self {
        self.read_env = false;
        self
    }

    /// Serves service types without `Default` that were not bound with a stand-in whose calls
    /// fail (a test runtime), instead of refusing to build.
    pub(crate) fn standing_in_for_unbound(mut self) -> Self {
        self.unbound = crate::registry::Unbound::StoodIn;
        self
    }

    /// Limits the token bucket `name` to `limit`: what `ctx.run(..).rate_limit(name)` steps
    /// and `#[handler(rate(name = ..))]` handlers wait on (over a limit the attribute gives).
    /// A name never configured (here or in an attribute) lets everything through, so a limit
    /// can be switched on by configuration alone.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::{RateLimit, Runtime};
    /// let mut builder = Runtime::builder();
    /// if let Ok(rate) = std::env::var("PAYMENT_EMAIL_RATE") {
    ///     builder = builder.rate_limit("email", rate.parse::<RateLimit>().map_err(anyhow::Error::msg)?);
    /// }
    /// builder.build()?.serve().await?;
    /// # Ok(()) }
    /// ```
    pub fn rate_limit(mut self, name: impl Into<String>, limit: crate::RateLimit) -> Self {
        self.rate_limits.insert(name.into(), limit);
        self
    }

    /// Lets at most `limit` invocations or steps hold a permit of the concurrency limit
    /// `name` at once (per key, for a keyed one): what `#[handler(concurrency(name = ..))]`
    /// handlers and `ctx.run(..).limiter(name)` steps wait on, over what an attribute says.
    /// The admin API changes it while the process runs (`PUT /limiters/{name}`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// // At most 4 calls to the payment provider at a time, across every handler.
    /// Runtime::builder().concurrency_limit("stripe-api", 4).build()?.serve().await?;
    /// # Ok(()) }
    /// ```
    pub fn concurrency_limit(mut self, name: impl Into<String>, limit: u32) -> Self {
        self.concurrency_limits.insert(name.into(), limit.max(1));
        self
    }

    /// Serves `service` with this value instead of its `Default`: the way to give handlers
    /// dependencies (a pool, a client, a secret) that they reach through `&self`.
    ///
    /// ```no_run
    /// use restate_runtime::prelude::*;
    /// pub struct Mailer { api_key: String }
    /// #[service]
    /// impl Mailer {
    ///     #[handler]
    ///     async fn send(&self, _ctx: Context<'_>, to: String) -> HandlerResult<String> {
    ///         Ok(format!("sent to {to} with key of {} chars", self.api_key.len()))
    ///     }
    /// }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = Runtime::builder().bind(Mailer { api_key: "k".into() }).build()?;
    /// # Ok(()) }
    /// ```
    ///
    /// Binding a type again replaces its earlier value (a test can override what a shared
    /// setup bound); two different types with one service name fail `build()`.
    pub fn bind<S: Service>(mut self, service: S) -> Self {
        let type_id = std::any::TypeId::of::<S>();
        self.bound.retain(|(bound, ..)| *bound != type_id);
        self.bound
            .push((type_id, S::definition(), Arc::new(service)));
        self
    }

    /// Makes a handler a webhook endpoint: signatures are checked before any invocation
    /// exists, and the idempotency key comes from the sender's signed event id, so a
    /// redelivered event is one invocation (a client's `idempotency-key` header is ignored on a
    /// verified endpoint). Verified endpoints are also served on the public webhook listener
    /// (`RESTATE_WEBHOOK_ADDR`). `build()` fails for a service or handler that does not exist
    /// and for a verifying scheme without a secret; unsigned endpoints are explicit
    /// ([`Webhook::unverified`](crate::webhook::Webhook::unverified)) and logged at WARN.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::{Runtime, webhook::{EventId, Webhook}};
    /// let hook = match std::env::var("STRIPE_WEBHOOK_SECRET") {
    ///     Ok(secret) => Webhook::stripe(Some(secret)),
    ///     // Local testing only: unsigned, served on the ingress alone.
    ///     Err(_) => Webhook::unverified(EventId::JsonField("id".into())),
    /// };
    /// let runtime = Runtime::builder()
    ///     .webhook("WebhookCallbackRouter", "onStripeEvent", hook)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn webhook(
        mut self,
        service: &str,
        handler: &str,
        webhook: impl Into<WebhookEndpoint>,
    ) -> Self {
        self.webhooks
            .insert((service.to_owned(), handler.to_owned()), webhook.into());
        self
    }

    /// Opens the data folder, registers services and resumes unfinished invocations.
    /// Call it inside a tokio runtime.
    ///
    /// ```no_run
    /// use restate_runtime::{BuildError, Runtime};
    /// #[tokio::main]
    /// async fn main() -> anyhow::Result<()> {
    ///     match Runtime::builder().build() {
    ///         Ok(runtime) => runtime.serve().await?,
    ///         // Another process (an old instance still running?) holds the data folder.
    ///         Err(BuildError::Storage(e)) => anyhow::bail!("cannot open the data folder: {e}"),
    ///         Err(e) => return Err(e.into()),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn build(self) -> Result<Runtime, BuildError> {
        // Mistakes in the setup first: they are what a caller needs to hear about, in or out of
        // a tokio runtime.
        let assembled = self.assemble()?;
        tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoAsyncRuntime)?;
        let storage = assembled.open_storage()?;
        let runtime = assembled.start(storage, crate::engine::EngineHooks::default())?;
        // A following handle: the task keeps nothing alive once the runtime is dropped.
        let handle = RuntimeHandle::following(runtime.engine().reference());
        tokio::spawn(keep_declared_schedules(handle));
        Ok(runtime)
    }

    /// Replays the journals of the invocations in this builder's data folder (a backup, or the
    /// folder of a stopped process) or database (read through read-only sessions, with no
    /// migration and no lease, while it serves) against the handlers of this binary, without running any
    /// step, sending anything or writing an invocation: the report names each invocation that
    /// this code would break, with the journal entry where it diverges. Opens no port. Run it
    /// in CI against a backup of production before a deploy. A data folder is opened as a
    /// start opens it (its log is recovered into its store), so it must be writable: a copy.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::{ReplayOptions, Runtime};
    /// let report = Runtime::builder()
    ///     .data_dir("./backups/before-deploy")
    ///     .check_replay(ReplayOptions::default())
    ///     .await?;
    /// if !report.is_ok() {
    ///     eprintln!("{report}");
    ///     std::process::exit(1);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_replay(
        self,
        options: ReplayOptions,
    ) -> Result<ReplayReport, ReplayCheckError> {
        let assembled = self.assemble()?;
        let storage = assembled.open_for_check()?;
        let config = &assembled.config;
        let engine = Engine::new(
            Arc::new(crate::storage::ReadOnly(storage.clone())),
            assembled.registry.clone(),
            EngineConfig {
                default_retention: config.default_retention,
                purge_interval: config.purge_interval,
                suspend_after: config.suspend_after,
                min_retention: HashMap::new(),
                release_heap: assembled.release_heap,
                on_storage_failure: assembled.on_storage_failure,
                recovery_concurrency: config.recovery_concurrency,
                max_interrupted_attempts: config.max_interrupted_attempts,
                max_invocation_bytes: config.max_invocation_bytes,
                timer_window: config.timer_window,
                app_version: String::new(),
                replay_check: true,
                rate_limits: assembled.rate_limits.clone(),
                concurrency_limits: Arc::default(),
                clock: crate::clock::Clock::default(),
                activity: None,
                injected: None,
            },
        );
        let report = engine.check_replay(&options).await;
        drop(engine);
        storage.close();
        Ok(report?)
    }

    /// Checks the configuration, services and webhooks: what [`Self::build`] and a test
    /// runtime start engines from.
    pub(crate) fn assemble(self) -> Result<Assembled, BuildError> {
        let mut config = self.config;
        if self.read_env {
            config.apply_env_logged()?;
        }
        config.check()?;
        let bound = self.bound.into_iter().map(|(_, d, s)| (d, s)).collect();
        let registry = Registry::assemble(bound, self.unbound)?;
        crate::webhook::check_endpoints(&self.webhooks, &registry).map_err(BuildError::Webhook)?;
        for ((service, handler), endpoint) in &self.webhooks {
            if !endpoint.is_verified() {
                tracing::warn!(
                    %service,
                    %handler,
                    "unverified webhook: unsigned requests are accepted (ingress only, never on the public webhook listener)"
                );
            }
        }
        Ok(Assembled {
            config,
            registry,
            webhooks: self.webhooks,
            release_heap: self.release_heap,
            rate_limits: self.rate_limits,
            concurrency_limits: self.concurrency_limits,
            on_storage_failure: self.on_storage_failure,
        })
    }
}

/// Opens the database of `url`; `read_only` for a replay check on a live database.
#[cfg(feature = "postgres")]
fn open_database(
    url: &str,
    config: &Config,
    read_only: bool,
) -> Result<Arc<dyn Storage>, OpenError> {
    Ok(Arc::new(crate::storage::PostgresStorage::open(
        url,
        &postgres_options(config, read_only),
    )?))
}

/// How the database is opened, by the configuration; `read_only` for a replay check.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_options(
    config: &Config,
    read_only: bool,
) -> crate::storage::PostgresOptions {
    crate::storage::PostgresOptions {
        partitions: config.partitions,
        max_queued_bytes: config.writer_queue_bytes,
        max_group_bytes: config.commit_group_bytes,
        lease_ttl: config.lease_ttl,
        read_only,
        ..Default::default()
    }
}

#[cfg(not(feature = "postgres"))]
fn open_database(
    _url: &str,
    _config: &Config,
    _read_only: bool,
) -> Result<Arc<dyn Storage>, OpenError> {
    Err(OpenError::Incompatible {
        path: "RESTATE_DATABASE_URL".into(),
        reason: "this binary was built without the `postgres` feature of restate-runtime".into(),
    })
}

/// A checked [`RuntimeBuilder`]: engines start from it, again after each restart of a test
/// runtime.
#[derive(Clone)]
pub(crate) struct Assembled {
    pub(crate) config: Config,
    registry: Registry,
    webhooks: Webhooks,
    release_heap: fn(),
    on_storage_failure: fn(&str),
    rate_limits: HashMap<String, crate::RateLimit>,
    concurrency_limits: HashMap<String, u32>,
}

impl Assembled {
    /// The configured store: the database when a URL is set, else the data folder.
    fn open_storage(&self) -> Result<Arc<dyn Storage>, OpenError> {
        match &self.config.database_url {
            Some(url) => open_database(url, &self.config, false),
            None => Ok(Arc::new(RedbStorage::open(
                &self.config.data_dir,
                &self.redb_options(),
            )?)),
        }
    }

    /// The store for a replay check: a database opened for reading only (no migration, no
    /// lease, read-only sessions), or a data folder that holds a store already (a mistyped
    /// path must not check an empty new one and pass).
    fn open_for_check(&self) -> Result<Arc<dyn Storage>, BuildError> {
        if let Some(url) = &self.config.database_url {
            return Ok(open_database(url, &self.config, true)?);
        }
        let dir = &self.config.data_dir;
        if !crate::storage::holds_store(dir) {
            return Err(OpenError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no store in this folder to check",
                ),
            }
            .into());
        }
        // A check needs no room to write: it never waits for free disk space.
        let options = RedbOptions {
            min_free_bytes: 0,
            ..self.redb_options()
        };
        Ok(Arc::new(RedbStorage::open(dir, &options)?))
    }

    pub(crate) fn redb_options(&self) -> RedbOptions {
        let config = &self.config;
        RedbOptions {
            cache_bytes: config.cache_bytes,
            partitions: config.partitions,
            min_free_bytes: config.min_free_disk_bytes,
            max_queued_bytes: config.writer_queue_bytes,
            max_group_bytes: config.commit_group_bytes,
            ..RedbOptions::default()
        }
    }

    /// Starts an engine over `storage` (recovery included) on the current tokio runtime.
    pub(crate) fn start(
        &self,
        storage: Arc<dyn Storage>,
        hooks: crate::engine::EngineHooks,
    ) -> Result<Runtime, BuildError> {
        let config = &self.config;
        let engine = Engine::start(
            storage.clone(),
            self.registry.clone(),
            EngineConfig {
                default_retention: config.default_retention,
                purge_interval: config.purge_interval,
                suspend_after: config.suspend_after,
                min_retention: self.webhooks.iter().fold(
                    HashMap::new(),
                    |mut floors, ((service, handler), endpoint)| {
                        floors
                            .entry(service.clone())
                            .or_default()
                            .insert(handler.clone(), endpoint.key_retention());
                        floors
                    },
                ),
                release_heap: self.release_heap,
                on_storage_failure: self.on_storage_failure,
                recovery_concurrency: config.recovery_concurrency,
                max_interrupted_attempts: config.max_interrupted_attempts,
                max_invocation_bytes: config.max_invocation_bytes,
                timer_window: config.timer_window,
                app_version: config
                    .app_version
                    .clone()
                    .unwrap_or_else(|| self.registry.default_version()),
                replay_check: false,
                rate_limits: self.rate_limits.clone(),
                concurrency_limits: Arc::new(crate::concurrency::ConcurrencyLimits::new(
                    self.concurrency_limits.clone(),
                )),
                clock: hooks.clock,
                activity: hooks.activity,
                injected: hooks.injected,
            },
        )?;
        if let (Some(url), Some(peers)) = (&config.advertised_ingress_url, storage.peers()) {
            peers.advertise(url);
        }
        Ok(Runtime {
            config: self.config.clone(),
            engine,
            storage,
            webhooks: self.webhooks.clone(),
        })
    }
}

/// The runtime's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// Restate's ingress API.
    Ingress,
    /// The admin API (with the web UI).
    Admin,
    /// The public listener: verified webhooks only.
    Webhooks,
}

/// A running durable-execution runtime.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     restate_runtime::Runtime::builder().data_dir("./data").build()?.serve().await?;
///     Ok(())
/// }
/// ```
pub struct Runtime {
    config: Config,
    engine: Engine,
    storage: Arc<dyn Storage>,
    webhooks: Webhooks,
}

impl Runtime {
    /// A builder with the defaults.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().build()?; // ./data, ingress on 8080, admin on 9070
    /// # Ok(()) }
    /// ```
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            config: Config::default(),
            bound: Vec::new(),
            read_env: true,
            webhooks: Webhooks::new(),
            release_heap: crate::engine::release_free_heap,
            on_storage_failure: crate::engine::exit_on_storage_failure,
            rate_limits: HashMap::new(),
            concurrency_limits: HashMap::new(),
            unbound: crate::registry::Unbound::default(),
        }
    }

    /// The effective configuration (after environment overrides).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::Runtime;
    /// let runtime = Runtime::builder().build()?;
    /// // RESTATE_INGRESS_ADDR, if set, is what counts.
    /// println!("ingress on http://{}", runtime.config().ingress_addr);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// [`RuntimeBuilder::check_replay`] on the default builder: the data folder of
    /// `RESTATE_DATA_DIR` (or `./data`), checked against every service this binary links.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// use restate_runtime::{ReplayOptions, Runtime};
    /// let report = Runtime::check_replay(ReplayOptions::default().include_completed(true)).await?;
    /// println!("{report}");
    /// # Ok(()) }
    /// ```
    pub async fn check_replay(options: ReplayOptions) -> Result<ReplayReport, ReplayCheckError> {
        Self::builder().check_replay(options).await
    }

    /// Copies the store into the folder `dir` while the runtime keeps serving: a consistent
    /// copy as of one commit, which opens as a data folder (`RESTATE_DATA_DIR=dir`) and is
    /// what the replay check reads. The folder is created; one holding files is refused
    /// ([`BackupError::NotEmpty`](crate::storage::BackupError::NotEmpty)). On PostgreSQL the
    /// database's own backups are the backups
    /// ([`BackupError::Unsupported`](crate::storage::BackupError::Unsupported)). The admin
    /// API's `POST /backup` does the same.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// let report = runtime.backup("./backups/before-deploy").await?;
    /// println!("{} invocations, {} bytes", report.invocations, report.bytes);
    /// # Ok(()) }
    /// ```
    pub async fn backup(
        &self,
        dir: impl Into<std::path::PathBuf>,
    ) -> Result<crate::storage::BackupReport, crate::storage::BackupError> {
        backup(self.storage.clone(), dir.into()).await
    }

    /// Starts a drain before this process is stopped (a deploy): new invocations from
    /// outside are answered 503 with `Retry-After` (clients and webhook senders retry), the
    /// ingress's `/restate/health` answers 503, and no attempt starts (invocations due, woken
    /// or called wait, durably, for [`undrain`](Self::undrain) or the next process). Attempts
    /// running now finish, fail or suspend; the status is [`ready`](DrainStatus::ready) once
    /// none runs. On a shared database (PostgreSQL) the process then also releases its lease:
    /// another process takes the invocations over at once, not after `RESTATE_LEASE_TTL`
    /// (this one commits what it still writes until then; `GET /drain` shows `lease`). The
    /// admin API's `PATCH /drain` does the same.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// runtime.drain();
    /// while !runtime.drain_status().ready() {
    ///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    /// }
    /// runtime.shutdown(); // interrupts no attempt
    /// # Ok(()) }
    /// ```
    pub fn drain(&self) -> DrainStatus {
        self.engine.start_drain()
    }

    /// Ends a drain: new invocations are accepted again and the attempts held back start
    /// (`PATCH /undrain`). On a shared database whose lease this process released, the drain
    /// ends once the lease is renewed (moments later: the status returned still says
    /// `draining`); one whose released lease another process took meanwhile stays drained
    /// (`PATCH /undrain` answers 409): it has nothing left to run.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// runtime.drain();
    /// // The deploy was called off.
    /// assert!(!runtime.undrain().draining);
    /// # Ok(()) }
    /// ```
    pub fn undrain(&self) -> DrainStatus {
        match self.engine.begin_undrain() {
            Ok(Ok(status)) => status,
            Ok(Err(holding)) => {
                let engine = self.engine.clone();
                self.engine.tasks().spawn(async move {
                    if let Err(e) = engine.finish_undrain(holding).await {
                        tracing::warn!("the drain goes on: {e}");
                    }
                });
                self.engine.drain.status()
            }
            Err(e) => {
                tracing::warn!("the drain goes on: {e}");
                self.engine.drain.status()
            }
        }
    }

    /// Whether this process drains and how many attempts run (`GET /drain`).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// assert!(!runtime.drain_status().draining);
    /// # Ok(()) }
    /// ```
    pub fn drain_status(&self) -> DrainStatus {
        self.engine.drain.status()
    }

    /// The application version this process records on the invocations it accepts: the
    /// configured one ([`RuntimeBuilder::app_version`], `RESTATE_APP_VERSION`) or the default
    /// (crate version plus a hash of the services' shape).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// println!("serving version {}", runtime.app_version());
    /// # Ok(()) }
    /// ```
    pub fn app_version(&self) -> &str {
        &self.engine.config().app_version
    }

    /// The services this runtime serves (those collected through `inventory` and those
    /// bound), sorted by name, each with its kind and handlers: what `GET /services` lists.
    ///
    /// ```standalone_crate
    /// use restate_runtime::prelude::*;
    /// use restate_runtime::ServiceKind;
    /// #[derive(Default)]
    /// pub struct Tracker;
    /// #[object]
    /// impl Tracker {
    ///     #[handler]
    ///     async fn ping(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
    ///         Ok(())
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anyhow::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let runtime = Runtime::builder().without_env().data_dir(dir.path()).build()?;
    /// let tracker = runtime.services().into_iter().find(|s| s.name == "Tracker").unwrap();
    /// assert_eq!(tracker.kind, ServiceKind::VirtualObject);
    /// assert_eq!(tracker.handlers[0].name, "ping");
    /// # Ok(()) }
    /// ```
    pub fn services(&self) -> Vec<ServiceDefinition> {
        self.engine
            .registry()
            .definitions()
            .iter()
            .map(|d| ServiceDefinition::clone(d))
            .collect()
    }

    /// A handle for invoking services in-process, without HTTP.
    ///
    /// ```no_run
    /// use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = Runtime::builder().build()?;
    /// let handle = runtime.handle(); // cheap to clone; hand it to web routes, jobs, tests
    /// let greeter = handle.client::<Greeter>();
    /// let greeting = greeter.greet("Ada".into()).call().await?;
    /// runtime.serve().await?; // the handle keeps working while serving
    /// # Ok(()) }
    /// ```
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            engine: Reach::Held(self.engine.clone()),
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves one of the listeners on `listener` with this runtime's limits until the engine
    /// shuts down (a test runtime's ports).
    pub(crate) fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        port: Port,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        self.server(
            listener,
            port,
            self.listener_limits(),
            self.engine.shutdown_signal(),
        )
    }

    /// The server of one listener, until `stop` turns true.
    fn server(
        &self,
        listener: tokio::net::TcpListener,
        port: Port,
        limits: crate::listener::Limits,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        let (router, name, limits) = match port {
            Port::Ingress => {
                self.advertise_ingress(&listener);
                (
                    crate::ingress::with_cors(self.ingress_router()),
                    "ingress",
                    crate::listener::Limits {
                        cors: true,
                        token: crate::listener::Guard::of(
                            self.config.ingress_token.as_deref(),
                            &[],
                        ),
                        ..limits
                    },
                )
            }
            Port::Admin => {
                let router = self.admin_router();
                let limits = crate::listener::Limits {
                    token: crate::listener::Guard::of(
                        self.config.admin_token.as_deref(),
                        crate::admin::OPEN_ROUTES,
                    ),
                    ..limits
                };
                if loopback {
                    (crate::admin::loopback_host_only(router), "admin", limits)
                } else {
                    (router, "admin", limits)
                }
            }
            Port::Webhooks => (
                self.webhook_router(),
                "webhooks",
                crate::listener::Limits {
                    http2: false,
                    max_body_bytes: limits
                        .max_body_bytes
                        .min(self.config.webhook_max_body_bytes),
                    ..limits
                },
            ),
        };
        crate::listener::serve(listener, router, name, limits, self.engine.clone(), stop)
    }

    /// Tells the other processes of a shared store where this one's ingress is reached, so
    /// that they relay the calls for its partitions to it.
    fn advertise_ingress(&self, listener: &tokio::net::TcpListener) {
        let Some(peers) = self.storage.peers() else {
            return;
        };
        // A configured URL was advertised as the runtime started (an ingress nested in the
        // user's server too).
        if self.config.advertised_ingress_url.is_some() {
            return;
        }
        match (listener.local_addr().ok()).and_then(crate::config::default_advertised_url) {
            Some(url) => peers.advertise(&url),
            None => tracing::info!(
                "the ingress binds every interface and RESTATE_ADVERTISED_INGRESS_URL is not \
                 set: other processes reach this one's partitions through its inbox only"
            ),
        }
    }

    /// The ingress as an axum router, to nest or merge into an existing server. It answers no
    /// CORS itself (the listener `serve` runs adds Restate's permissive policy): the server's
    /// own policy applies.
    ///
    /// ```no_run
    /// # async fn demo(runtime: restate_runtime::Runtime) {
    /// let app = axum::Router::new().nest("/durable", runtime.ingress_router());
    /// # let _ = app; }
    /// ```
    pub fn ingress_router(&self) -> axum::Router {
        crate::ingress::router(
            self.engine.clone(),
            self.body_limits(),
            self.webhooks.clone(),
            self.config.ingress_token.clone(),
        )
    }

    /// The public webhook listener's router: `POST` to the handler path of each verified
    /// webhook (signature checked, key from the signed event id) and a bare 404 for anything
    /// else, `/restate/*` and other handlers included. `serve` runs it on
    /// `RESTATE_WEBHOOK_ADDR` when that is set.
    ///
    /// ```no_run
    /// # async fn demo(runtime: restate_runtime::Runtime) -> anyhow::Result<()> {
    /// // The internet-facing port of an existing server takes webhooks and nothing else.
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
    /// axum::serve(listener, runtime.webhook_router()).await?;
    /// # Ok(()) }
    /// ```
    pub fn webhook_router(&self) -> axum::Router {
        let mut bodies = self.body_limits();
        bodies.max_bytes = bodies.max_bytes.min(self.config.webhook_max_body_bytes);
        crate::ingress::webhook_router(self.engine.clone(), bodies, &self.webhooks)
    }

    fn body_limits(&self) -> crate::ingress::BodyLimits {
        let mut secret_headers = self.config.secret_headers.clone();
        // The ingress token is never kept, whatever the configured list says.
        if self.config.ingress_token.is_some()
            && !secret_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case("authorization"))
        {
            secret_headers.push("authorization".into());
        }
        crate::ingress::BodyLimits {
            max_bytes: self.config.max_body_bytes,
            timeout: self.config.body_timeout,
            secret_headers: secret_headers.into(),
        }
    }

    /// The admin API as an axum router.
    ///
    /// ```no_run
    /// # async fn demo(runtime: restate_runtime::Runtime) -> anyhow::Result<()> {
    /// // Ingress and admin on one port of an existing server, instead of `serve`.
    /// let app = axum::Router::new()
    ///     .merge(runtime.ingress_router())
    ///     .nest("/admin", runtime.admin_router());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app).await?;
    /// # Ok(()) }
    /// ```
    pub fn admin_router(&self) -> axum::Router {
        let webhooks = self
            .webhooks
            .iter()
            .map(|(target, endpoint)| (target.clone(), endpoint.scheme()))
            .collect();
        crate::admin::router(
            self.engine.clone(),
            self.config.admin_token.clone(),
            webhooks,
        )
    }

    /// Serves ingress and admin on their addresses until SIGINT or SIGTERM, then shuts down.
    ///
    /// ```no_run
    /// #[tokio::main]
    /// async fn main() -> anyhow::Result<()> {
    ///     restate_runtime::init_tracing();
    ///     // Returns after Ctrl-C or SIGTERM, with the journal flushed.
    ///     restate_runtime::Runtime::builder().build()?.serve().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn serve(self) -> Result<(), ServeError> {
        self.serve_until(shutdown_signal()).await
    }

    /// Serves until `signal` resolves, then shuts down gracefully: stops accepting, stops
    /// handlers (they resume by replay after a restart), flushes the journal and closes it.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let runtime = restate_runtime::Runtime::builder().build()?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let server = tokio::spawn(runtime.serve_until(async { let _ = stopped.await; }));
    /// // ... later, from the application's own shutdown path:
    /// let _ = stop.send(());
    /// server.await??;
    /// # Ok(()) }
    /// ```
    pub async fn serve_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let limits = self.listener_limits();
        let bind = |addr| {
            // A burst beyond the cap waits in the backlog to be answered (429), not dropped.
            crate::listener::bind(addr, limits.max_connections.max(1024))
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let ingress = bind(self.config.ingress_addr)?;
        let admin = bind(self.config.admin_addr)?;
        let webhooks = match self.config.webhook_addr {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };
        tracing::info!(
            ingress = %ingress.local_addr()?,
            admin = %admin.local_addr()?,
            webhooks = ?webhooks.as_ref().map(|l| l.local_addr()).transpose()?,
            store = %self.config.store_description(),
            max_connections = limits.max_connections,
            max_in_flight = limits.max_in_flight,
            "restate runtime listening"
        );
        if webhooks.is_some() && !self.webhooks.values().any(WebhookEndpoint::is_verified) {
            tracing::warn!("the public webhook listener has no verified webhook to serve");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            stop_tx.send_replace(true);
        });
        let webhook_server =
            webhooks.map(|listener| self.server(listener, Port::Webhooks, limits, stop_rx.clone()));
        let webhook_server = async move {
            match webhook_server {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        // Handlers stop once the signal arrives, so open requests waiting on them end too.
        let engine = self.engine.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
            engine.shutdown();
            engine
                .interrupt_waiters("the process is shutting down")
                .await;
        });
        let result = tokio::try_join!(
            self.server(ingress, Port::Ingress, limits, stop_rx.clone()),
            self.server(admin, Port::Admin, limits, stop_rx.clone()),
            webhook_server
        );
        self.shutdown();
        // The last attempts' spans, before the process ends.
        #[cfg(feature = "otel")]
        let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
        result.map(|_| ()).map_err(ServeError::Io)
    }

    /// The listeners' limits: the configured ones, with the connection cap kept below the
    /// open-file limit (raised to its hard limit first) so that accepting never runs out.
    fn listener_limits(&self) -> crate::listener::Limits {
        let mut max_connections = self.config.max_connections;
        if let Some(files) = crate::listener::raise_open_file_limit() {
            // Three listeners share the descriptors with the store and the log.
            let room = (files.saturating_sub(64) / 3) as usize;
            if room < max_connections {
                tracing::warn!(
                    configured = max_connections,
                    open_file_limit = files,
                    "connection cap lowered to fit the open-file limit"
                );
                max_connections = room.max(1);
            }
        }
        crate::listener::Limits {
            max_connections,
            max_in_flight: self.config.max_in_flight,
            header_timeout: self.config.header_timeout,
            body_timeout: self.config.body_timeout,
            max_body_bytes: self.config.max_body_bytes,
            http2: true,
            token: None,
            cors: false,
            unsent_response_bytes: self.config.unsent_response_bytes,
        }
    }

    /// Stops handlers and timers, flushes the journal and closes the data folder.
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
    /// # async fn demo() -> anyhow::Result<()> {
    /// // In-process only (no HTTP): run some invocations, then close the data folder.
    /// let runtime = Runtime::builder().build()?;
    /// let greeter = runtime.handle().client::<Greeter>();
    /// greeter.greet("Ada".into()).call().await?;
    /// runtime.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn shutdown(self) {
        self.engine.shutdown();
        self.storage.close();
        // After the close, which made whatever finished durable: the rest never will here.
        self.engine.abandon("the runtime shut down");
        tracing::info!("restate runtime stopped");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Invokes services in-process (from `main`, a test, an axum route) through their typed clients.
///
/// ```no_run
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Greeter;
/// #[service]
/// impl Greeter {
///     #[handler]
///     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
///         Ok(format!("Hello {name}"))
///     }
/// }
/// # async fn demo(runtime: Runtime) -> anyhow::Result<()> {
/// let handle = runtime.handle();
/// let greeting = handle.client::<Greeter>().greet("Ada".into()).call().await?;
/// assert_eq!(greeting, "Hello Ada");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RuntimeHandle {
    engine: Reach,
}

/// How a handle reaches its engine.
#[derive(Clone)]
enum Reach {
    /// The engine itself, kept alive by the handle.
    Held(Engine),
    /// Whichever engine holds this reference now: a test runtime's, across its restarts.
    Following(crate::engine::EngineRef),
}

/// Brings the schedules `#[handler(cron = ..)]` declares in step with the stored ones, retrying
/// (with a growing pause, for about ten minutes) while the store or the owner cannot take it.
async fn keep_declared_schedules(handle: RuntimeHandle) {
    let mut pause = Duration::from_millis(200);
    for attempt in 1..=20 {
        // A key held by a stuck step must not hold the rest up for good: each try is bounded.
        let synced = tokio::time::timeout(
            Duration::from_secs(60),
            crate::schedules::sync_declared(&handle),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::ScheduleError::Unavailable(
                "a schedule did not answer within 60 s".into(),
            ))
        });
        match synced {
            Ok(()) => return,
            Err(_) if handle.engine().is_err() => return,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "declared schedules not in step yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
    tracing::error!(
        "declared schedules could not be brought in step; restart the process to retry"
    );
}

impl Caller for RuntimeHandle {
    type Request<I, O> = ExternalRequest<O>;
    fn request<I, O>(&self, parts: RequestParts) -> ExternalRequest<O> {
        ExternalRequest::new(self.clone(), parts)
    }
}

impl RuntimeHandle {
    /// The schedules: create, list, pause, resume, trigger and delete them (see
    /// [`Schedules`](crate::Schedules)).
    ///
    /// ```no_run
    /// # async fn demo(handle: restate_runtime::RuntimeHandle) -> anyhow::Result<()> {
    /// for schedule in handle.schedules().list().await? {
    ///     println!("{} next at {:?}", schedule.id, schedule.next_fire_at);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn schedules(&self) -> crate::Schedules {
        crate::Schedules::new(self.clone())
    }

    /// The typed client of a `#[service]`, named by its type: `handle.client::<Greeter>()`.
    /// Its requests run in this process, with no HTTP in between.
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
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let greeter = handle.client::<Greeter>();
    /// assert_eq!(greeter.greet("Ada".into()).call().await?, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub fn client<S: HasServiceClient>(&self) -> S::Client<'static, RuntimeHandle> {
        <S::Client<'static, RuntimeHandle> as IntoServiceClient<_>>::create(self.clone())
    }

    /// The typed client of one key of an `#[object]`: `handle.object::<Counter>(key)`.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Counter;
    /// # #[object]
    /// # impl Counter {
    /// #     #[handler]
    /// #     async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
    /// #         let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
    /// #         ctx.set("count", count);
    /// #         Ok(count)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// // `Counter/visits`: its own state, one exclusive handler at a time.
    /// let visits = handle.object::<Counter>("visits");
    /// let after_one = visits.add(1).call().await?;
    /// assert_eq!(visits.add(2).call().await?, after_one + 2);
    /// # Ok(()) }
    /// ```
    pub fn object<O: HasObjectClient>(
        &self,
        key: impl Into<String>,
    ) -> O::Client<'static, RuntimeHandle> {
        <O::Client<'static, RuntimeHandle> as IntoObjectClient<_>>::create(self.clone(), key.into())
    }

    /// The typed client of one `#[workflow]` (by its key): `handle.workflow::<Signup>(key)`.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Signup;
    /// # #[workflow]
    /// # impl Signup {
    /// #     #[handler]
    /// #     async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
    /// #         let code: String = ctx.promise("clicked").await?;
    /// #         Ok(format!("{email} verified with {code}"))
    /// #     }
    /// #     #[handler]
    /// #     async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
    /// #         Ok(ctx.resolve_promise("clicked", code).await?)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let signup = handle.workflow::<Signup>("ada");
    /// let run = signup.run("ada@example.com".into()).send().await?; // waits for the click
    /// signup.click("1234".into()).call().await?;
    /// assert_eq!(run.attach().await?, "ada@example.com verified with 1234");
    /// # Ok(()) }
    /// ```
    pub fn workflow<W: HasWorkflowClient>(
        &self,
        key: impl Into<String>,
    ) -> W::Client<'static, RuntimeHandle> {
        <W::Client<'static, RuntimeHandle> as IntoWorkflowClient<_>>::create(
            self.clone(),
            key.into(),
        )
    }

    /// A typed client for a service.
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
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let greeter = handle.client::<Greeter>();
    /// assert_eq!(greeter.greet("Ada".into()).call().await?, "Hello Ada");
    /// # Ok(()) }
    /// ```
    #[deprecated(
        note = "name the type itself: `client::<Greeter>()` instead of `service_client::<XClient>(..)`"
    )]
    pub fn service_client<C: IntoServiceClient<RuntimeHandle>>(&self) -> C {
        C::create(self.clone())
    }

    /// A typed client for one key of a virtual object.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Counter;
    /// # #[object]
    /// # impl Counter {
    /// #     #[handler]
    /// #     async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
    /// #         let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
    /// #         ctx.set("count", count);
    /// #         Ok(count)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// // `Counter/visits`: its own state, one exclusive handler at a time.
    /// let visits = handle.object::<Counter>("visits");
    /// let after_one = visits.add(1).call().await?;
    /// assert_eq!(visits.add(2).call().await?, after_one + 2);
    /// # Ok(()) }
    /// ```
    #[deprecated(
        note = "name the type itself: `object::<Counter>(key)` instead of `object_client::<XClient>(..)`"
    )]
    pub fn object_client<C: IntoObjectClient<RuntimeHandle>>(&self, key: impl Into<String>) -> C {
        C::create(self.clone(), key.into())
    }

    /// A typed client for one workflow.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Signup;
    /// # #[workflow]
    /// # impl Signup {
    /// #     #[handler]
    /// #     async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
    /// #         let code: String = ctx.promise("clicked").await?;
    /// #         Ok(format!("{email} verified with {code}"))
    /// #     }
    /// #     #[handler]
    /// #     async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
    /// #         Ok(ctx.resolve_promise("clicked", code).await?)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let signup = handle.workflow::<Signup>("ada");
    /// let run = signup.run("ada@example.com".into()).send().await?; // waits for the click
    /// signup.click("1234".into()).call().await?;
    /// let outcome: String = handle.attach(run).await?;
    /// assert_eq!(outcome, "ada@example.com verified with 1234");
    /// # Ok(()) }
    /// ```
    #[deprecated(
        note = "name the type itself: `workflow::<Signup>(key)` instead of `workflow_client::<XClient>(..)`"
    )]
    pub fn workflow_client<C: IntoWorkflowClient<RuntimeHandle>>(
        &self,
        key: impl Into<String>,
    ) -> C {
        C::create(self.clone(), key.into())
    }

    /// Waits for the result of an invocation sent earlier.
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
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let greeter = handle.client::<Greeter>();
    /// let sent = greeter.greet("Ada".into()).send().await?;
    /// // The output type is the handler's; after a restart, keep the id and rebuild the handle.
    /// let greeting: String = handle.attach(sent).await?;
    /// assert_eq!(greeting, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub async fn attach<O: DeserializeOwned>(
        &self,
        invocation: impl Into<InvocationId>,
    ) -> Result<O, ClientError> {
        let id = invocation.into();
        let done = self
            .engine()?
            .attach(id)
            .await?
            .ok_or_else(|| crate::handle::not_found(id))?;
        Ok(crate::context::run::outcome_to_result(
            done.outcome.clone(),
        )?)
    }

    /// A handle on an invocation by its id (kept from an earlier `send`, say), to attach to it,
    /// look at its output or cancel it; [`typed`](InvocationHandle::typed) sets the output
    /// type.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # async fn demo(handle: RuntimeHandle, saved: &str) -> anyhow::Result<()> {
    /// let id: restate_runtime::InvocationId = saved.parse()?;
    /// let report = handle.invocation(id).typed::<String>();
    /// if let Some(text) = report.output().await? {
    ///     println!("{text}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn invocation(
        &self,
        id: InvocationId,
    ) -> InvocationHandle<serde_json::Value, RuntimeHandle> {
        let reference = match &self.engine {
            Reach::Held(engine) => engine.reference(),
            Reach::Following(reference) => *reference,
        };
        InvocationHandle::new(id, reference)
    }

    /// The engine, unless the test runtime a following handle came from is gone.
    pub(crate) fn engine(&self) -> Result<Engine, EngineError> {
        match &self.engine {
            Reach::Held(engine) => Ok(engine.clone()),
            Reach::Following(reference) => reference
                .get()
                .ok_or_else(|| EngineError::Lost("the test runtime has been dropped".into())),
        }
    }

    pub(crate) fn from_engine(engine: Engine) -> Self {
        Self {
            engine: Reach::Held(engine),
        }
    }

    /// A handle that reaches whichever engine holds `reference` at each call.
    pub(crate) fn following(reference: crate::engine::EngineRef) -> Self {
        Self {
            engine: Reach::Following(reference),
        }
    }

    /// Requests cancellation of an invocation: its handler gets a 409 terminal error at its next
    /// await point and can compensate.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Exports;
    /// # #[service]
    /// # impl Exports {
    /// #     #[handler]
    /// #     async fn export(&self, ctx: Context<'_>, month: String) -> HandlerResult<String> {
    /// #         ctx.sleep(std::time::Duration::from_secs(3600)).await?;
    /// #         Ok(month)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let exports = handle.client::<Exports>();
    /// let export = exports.export("2024-05".into()).send().await?;
    /// handle.cancel(export).await?;
    /// let err = handle.attach::<String>(export).await.unwrap_err();
    /// assert!(matches!(err, restate_runtime::ClientError::Terminal(e) if e.code() == 409));
    /// # Ok(()) }
    /// ```
    pub async fn cancel(
        &self,
        invocation: impl Into<InvocationId>,
    ) -> Result<(), crate::engine::ControlError> {
        self.engine()?.cancel(invocation.into()).await.map(|_| ())
    }

    /// Stops an invocation at once; it completes with a 409 "killed" error. `Ok` only once it
    /// ended so: one that completed first (the kill came too late) is a
    /// [`ControlError::Conflict`](crate::ControlError::Conflict), its result standing. On a
    /// shared database, the kill of one another process runs is handed to that process, and
    /// `Ok` says it was handed over (the admin API answers `202` then).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Exports;
    /// # #[service]
    /// # impl Exports {
    /// #     #[handler]
    /// #     async fn export(&self, ctx: Context<'_>, month: String) -> HandlerResult<String> {
    /// #         ctx.sleep(std::time::Duration::from_secs(3600)).await?;
    /// #         Ok(month)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let exports = handle.client::<Exports>();
    /// let export = exports.export("2024-05".into()).send().await?;
    /// // No compensation runs: for stuck invocations, where `cancel` is not enough.
    /// handle.kill(export).await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(
        &self,
        invocation: impl Into<InvocationId>,
    ) -> Result<(), crate::engine::ControlError> {
        self.engine()?.kill(invocation.into()).await.map(|_| ())
    }

    /// Resolves an awakeable from outside any handler (a route of your own, say) and returns
    /// once the completion is durable. The first completion wins; a later one is accepted and
    /// changes nothing. A malformed or forged id is a 400, an unknown invocation a 404.
    ///
    /// ```no_run
    /// # async fn demo(handle: restate_runtime::RuntimeHandle, id: &str) -> anyhow::Result<()> {
    /// handle.resolve_awakeable(id, "approved").await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve_awakeable<T: Serialize + 'static>(
        &self,
        id: &str,
        value: T,
    ) -> Result<(), ClientError> {
        let outcome = crate::context::resolved_awakeable(&value)?;
        self.complete_awakeable(id, outcome).await
    }

    /// Rejects an awakeable from outside any handler: its waiter gets `error` (code, message
    /// and metadata), or a message alone as code 500. As [`Self::resolve_awakeable`] otherwise.
    ///
    /// ```no_run
    /// # async fn demo(handle: restate_runtime::RuntimeHandle, id: &str) -> anyhow::Result<()> {
    /// handle.reject_awakeable(id, "the reviewer left").await?;
    /// # Ok(()) }
    /// ```
    pub async fn reject_awakeable(
        &self,
        id: &str,
        error: impl Into<TerminalError>,
    ) -> Result<(), ClientError> {
        let outcome = crate::storage::Outcome::failure(&error.into());
        self.complete_awakeable(id, outcome).await
    }

    async fn complete_awakeable(
        &self,
        id: &str,
        outcome: crate::storage::Outcome,
    ) -> Result<(), ClientError> {
        match self.engine()?.complete_awakeable(id, outcome).await {
            Ok(()) => Ok(()),
            Err(refused) => Err(match refused.refusal() {
                Ok((status, message)) => TerminalError::new_with_code(status, message).into(),
                Err(e) => e.into(),
            }),
        }
    }

    /// Counters of the journal writer (commits and batches), for benchmarks.
    ///
    /// ```no_run
    /// # async fn demo(handle: restate_runtime::RuntimeHandle) -> anyhow::Result<()> {
    /// let stats = handle.writer_stats();
    /// // Group commit: how many batches share one durable transaction, on average.
    /// let per_commit = stats.batches as f64 / stats.commits.max(1) as f64;
    /// println!("{} commits, {per_commit:.1} batches each", stats.commits);
    /// # Ok(()) }
    /// ```
    pub fn writer_stats(&self) -> crate::storage::WriterStats {
        self.engine()
            .map(|engine| engine.storage().writer_stats())
            .unwrap_or_default()
    }
}

/// Runs a backup of `storage` on a blocking thread: it reads the whole store.
pub(crate) async fn backup(
    storage: Arc<dyn Storage>,
    dir: std::path::PathBuf,
) -> Result<crate::storage::BackupReport, crate::storage::BackupError> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || storage.backup(&dir))
        .await
        .unwrap_or_else(|e| {
            Err(crate::storage::BackupError::Failed {
                path: shown,
                reason: e.to_string(),
            })
        })
}

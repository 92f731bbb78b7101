//! The PostgreSQL backend (feature `postgres`): the same [`Storage`] on tables in a database
//! (`RESTATE_DATABASE_URL`), shared by the processes of a deployment, each running the
//! partitions it leases (`ownership.rs`: a fair share each, fenced by a per-partition epoch).
//!
//! The backend runs its own small tokio runtime (one thread) for its connections, so that it
//! behaves the same under any runtime the engine runs on: a write is queued to the writer
//! (`writer.rs`: group commit, one transaction per group), a read (the trait's reads are
//! synchronous, as redb's are) is run there on a pooled connection while the caller waits.
//! At open, the schema is migrated (`schema.rs`) and the deployment's partition count and
//! secret are read, or recorded by the first process.
//!
//! Tables (`restate-runtime/migrations/postgres/`): `restate_invocations` (record, recovery
//! hint, due time, expiry, one row per invocation), `restate_journal`, `restate_state`,
//! `restate_promises`, `restate_promise_waiters`, `restate_wakes`, `restate_result_waiters`,
//! `restate_meta`, `restate_inbox` (schema 2), `restate_partitions` and `restate_members`
//! (schema 3; `restate_lease`, schema 1's single lease, is held by them together), and
//! refinery's `restate_schema_history`. The scans that find work (inbox, due times, expiries,
//! recovery) read only the partitions this process runs.
//! Invocation ids are stored as their 24-byte storage keys, so `bytea` order is id order.

mod acceptances;
mod combined;
mod fold;
mod forwarder;
mod kill;
mod lookups;
mod ownership;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::records::{self, InvocationRecord, JournalEntry, Outcome, Target};
use super::{
    CommitWaiter, DEFAULT_MAX_GROUP_BYTES, DEFAULT_MAX_QUEUED_BYTES, Finished, ForwardWaiter,
    HintHead, Inbound, InboxMessage, InboxPending, OpenError, Partitions, Peers, Placement,
    RecordWaiter, ResultWaiter, Signals, StateScope, Storage, StorageError, UnfinishedHint,
    WriteOp, WriterStats,
};
use crate::ids::InvocationId;
pub(crate) use kill::KillSwitch;
use writer::{Batch, Message, Shared};

/// How long closing waits for the writer to commit what is queued.
const CLOSE_PATIENCE: Duration = Duration::from_secs(30);

/// One statement parameter, owned, so that it can travel to the backend's runtime.
type Param = Box<dyn ToSql + Sync + Send>;

/// How a [`PostgresStorage`] is opened.
///
/// ```
/// let options = restate_runtime::storage::PostgresOptions::default();
/// assert_eq!(options.max_connections, 10); // the writer's and nine for reads
/// assert_eq!(options.partitions, 256);
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Partitions of a new database (one already in use keeps its own).
    pub partitions: u32,
    /// Connections the process opens at most: one for the writer, the rest for reads.
    pub max_connections: usize,
    /// Bytes submitted and not yet committed above which new work is refused until the
    /// writer catches up.
    pub max_queued_bytes: usize,
    /// Bytes one transaction takes at most: what is queued beyond goes into the next one.
    pub max_group_bytes: usize,
    /// How long a partition's lease lasts without a renewal (`RESTATE_LEASE_TTL`; renewed
    /// every third of it): the partitions of a paused or cut-off process are taken over this
    /// long after its last renewal, by the database's clock; those of a killed one at once.
    pub lease_ttl: Duration,
    /// How long opening waits for a process of an older binary (schema 2, which runs the
    /// whole database alone) to stop or lose its lease before giving up with
    /// [`OpenError::Locked`]. `None`, the default: it does not wait; the store opens as a
    /// standby (reads work, writes go to the owner's inbox through [`Storage::forward`]) and
    /// takes part once it can, which [`Storage::ownership`] tells. Beside processes of this
    /// binary it never waits: it takes its share of the partitions as they free.
    pub owner_wait: Option<Duration>,
    /// Opens for reading only (a replay check on a live database): no migration, no lease,
    /// and every read in one read-only transaction, so that all of them see one snapshot
    /// (the database as it was when the store opened); writes and forwards are refused.
    pub read_only: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            partitions: 256,
            max_connections: 10,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            lease_ttl: Duration::from_secs(10),
            owner_wait: None,
            read_only: false,
        }
    }
}

/// The [`Storage`] on PostgreSQL.
///
/// ```no_run
/// use restate_runtime::storage::{PostgresOptions, PostgresStorage};
/// let store = PostgresStorage::open("postgres://app@db.internal/app", &PostgresOptions::default())?;
/// # Ok::<(), restate_runtime::storage::OpenError>(())
/// ```
pub struct PostgresStorage {
    runtime: BackendRuntime,
    reads: Reads,
    signals: Signals,
    /// Messages on their way to the owner's inbox ([`forwarder`]).
    outgoing: mpsc::UnboundedSender<forwarder::Outgoing>,
    /// Point reads on their way ([`lookups`]).
    asks: Asks,
    queue: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    shared: Arc<Shared>,
    /// Where the other processes serve (`None` for a read-only check).
    peers: Option<Peers>,
    partitions: u32,
    secret: [u8; 32],
    max_queued_bytes: usize,
}

impl PostgresStorage {
    /// Connects, migrates the schema, and starts the writer. `url` is a libpq-style URL or
    /// key-value string (`postgres://user:password@host:port/database`).
    pub fn open(url: &str, options: &PostgresOptions) -> Result<Self, OpenError> {
        Self::open_with(url, options, None)
    }

    /// [`Self::open`], as a store that a test's kill switch may end (`life`).
    fn open_with(
        url: &str,
        options: &PostgresOptions,
        life: Option<kill::Life>,
    ) -> Result<Self, OpenError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| OpenError::Incompatible {
                path: "RESTATE_DATABASE_URL".into(),
                reason: format!("not a PostgreSQL connection URL: {e}"),
            })?;
        let place = crate::config::redact_password(url);
        let unreachable = |reason: String| OpenError::Io {
            path: place.clone(),
            source: std::io::Error::other(reason),
        };
        let runtime = BackendRuntime::start()
            .map_err(|e| unreachable(format!("cannot start the backend's thread: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A connection to a database that went away is noticed within the lease's length,
        // not after the kernel's two hours of keepalive silence.
        config
            // In whole seconds, at least one (the socket option's unit).
            .keepalives_idle(
                options
                    .lease_ttl
                    .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            )
            .tcp_user_timeout(options.lease_ttl);
        with_session_options(&mut config, PLANS, "");
        let peers = Peers::default();
        let shared = Arc::new(Shared {
            failure: watch::channel(None).0,
            stats: Mutex::default(),
            queued: AtomicUsize::new(0),
            unanswered: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            owner: watch::channel(false).0,
            owned: watch::channel(Partitions::none(0)).0,
            held_until: watch::channel(None).0,
            life,
            acceptances: Default::default(),
            #[cfg(test)]
            before_placing: Mutex::default(),
        });
        let connect = {
            let (config, shared) = (config.clone(), shared.clone());
            let (partitions, patience, ttl) =
                (options.partitions, options.owner_wait, options.lease_ttl);
            let read_only = options.read_only;
            let peers = peers.clone();
            async move {
                let (mut client, connection) =
                    config.connect(NoTls).await.map_err(|e| pg_error(&e))?;
                // Once the writer's session ends, another process may take over (its server
                // process is gone): nothing more may be acknowledged here (law 10).
                tokio::spawn(async move {
                    // A kill drops the connection: the server ends the session (rolling back
                    // a transaction in progress) as when a killed process's socket closes.
                    let reason = tokio::select! {
                        ended = connection => match ended {
                            Ok(()) => "closed".to_owned(),
                            Err(e) => pg_error(&e),
                        },
                        () = shared.killed() => "cut off by a kill".to_owned(),
                    };
                    if !shared.closed.load(Ordering::SeqCst) {
                        shared.poison(format!(
                            "the writer's connection to PostgreSQL ended: {reason}"
                        ));
                    }
                });
                // Durable before acknowledged, whatever the role's or database's defaults; no
                // server-side timeout may end the writer's idle session, but a transaction
                // left open by a paused owner ends with its lease, so that it cannot hold the
                // lease row's lock from the process that takes over.
                client
                    .batch_execute(&format!(
                        "SET synchronous_commit = on; SET statement_timeout = 0; \
                         SET idle_in_transaction_session_timeout = {}",
                        ttl.as_millis().max(1)
                    ))
                    .await
                    .map_err(|e| pg_error(&e))?;
                // PostgreSQL 14 and later only.
                let _ = client.batch_execute("SET idle_session_timeout = 0").await;
                if read_only {
                    // One snapshot for every read, held as long as the reader is open (no
                    // transaction timeout: PostgreSQL 17 and later only).
                    let _ = client.batch_execute("SET transaction_timeout = 0").await;
                    client
                        .batch_execute(
                            "SET idle_in_transaction_session_timeout = 0; \
                             BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                        )
                        .await
                        .map_err(|e| pg_error(&e))?;
                    let deployment = schema::read(&client).await;
                    return Ok((client, deployment, None));
                }
                let deployment = match schema::prepare(&mut client, partitions).await {
                    Ok(deployment) => deployment,
                    Err(e) => return Ok((client, Err(e), None)),
                };
                let mut leases =
                    ownership::Leases::prepare(&client, ttl, deployment.partitions, peers)
                        .await
                        .map_err(|e| pg_error(&e))?;
                // The first round before the store opens: a process that can run partitions
                // runs them from the start. It waits only for a binary of schema 2 that holds
                // the whole database, as long as `owner_wait` says.
                let started = std::time::Instant::now();
                loop {
                    if let Err(lost) = leases.round(&client).await? {
                        return Err(format!("{lost:?}"));
                    }
                    if leases.member() || started.elapsed() >= patience.unwrap_or_default() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, String>((client, Ok(deployment), Some(leases)))
            }
        };
        let (client, deployment, leases) = wait(runtime.handle(), connect)
            .ok_or_else(|| unreachable("the backend's thread stopped".into()))?
            .map_err(unreachable)?;
        let deployment = deployment.map_err(|e| match e {
            schema::SchemaError::TooNew { .. }
            | schema::SchemaError::Divergent { .. }
            | schema::SchemaError::Malformed(_) => OpenError::Incompatible {
                path: place.clone(),
                reason: e.to_string(),
            },
            e => unreachable(e.to_string()),
        })?;
        let joined = leases.as_ref().is_some_and(|l| l.member());
        if !joined && options.owner_wait.is_some() && !options.read_only {
            return Err(OpenError::Locked { path: place });
        }
        let (signals, inbox_tx) = Signals::channels();
        let (outgoing, forwards) = mpsc::unbounded_channel();
        let (asks, asked) = Asks::channels();
        if options.read_only {
            // No writer: nothing is ever submitted, and the end of the snapshot's session
            // fails the reads, not the process.
            shared.closed.store(true, Ordering::SeqCst);
            let reads = Reads::Snapshot(Arc::new(client));
            asked.run(&runtime, &reads);
            return Ok(Self {
                runtime,
                reads,
                signals,
                outgoing,
                asks,
                queue: Mutex::new(None),
                shared,
                peers: None,
                partitions: deployment.partitions,
                secret: deployment.secret,
                max_queued_bytes: options.max_queued_bytes,
            });
        }
        // Bumped when another process released partitions: the writer looks for free ones now.
        let (released_tx, released) = watch::channel(0);
        runtime.spawn(listen(
            config.clone(),
            inbox_tx,
            released_tx,
            signals.finished.clone(),
        ));
        // Forwarded messages are acknowledged once written: durable, whatever the defaults.
        let mut pooled = config;
        with_session_options(&mut pooled, "", "-c synchronous_commit=on");
        let manager = Manager::from_config(
            pooled,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let reads = Pool::builder(manager)
            .max_size(options.max_connections.saturating_sub(1).max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        runtime.spawn(forwarder::run(reads.clone(), forwards));
        asked.run(&runtime, &Reads::Pool(reads.clone()));
        let (queue, rx) = mpsc::unbounded_channel();
        let supervised = shared.clone();
        let max_group_bytes = options.max_group_bytes;
        shared
            .owned
            .send_replace(Partitions::none(deployment.partitions));
        let mut leases = leases.expect("opened for writing");
        shared.publish(&mut leases);
        runtime.spawn(async move {
            let run = writer::run(
                client,
                rx,
                supervised.clone(),
                max_group_bytes,
                leases,
                released,
            );
            if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                supervised.poison("the PostgreSQL writer panicked".into());
            }
        });
        Ok(Self {
            runtime,
            reads: Reads::Pool(reads),
            signals,
            outgoing,
            asks,
            queue: Mutex::new(Some(queue)),
            shared,
            peers: Some(peers),
            partitions: deployment.partitions,
            secret: deployment.secret,
            max_queued_bytes: options.max_queued_bytes,
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Has the writer await `step` before its next transaction that places sends.
    #[cfg(test)]
    pub(crate) fn before_next_placing(&self, step: futures::future::BoxFuture<'static, ()>) {
        *self.shared.before_placing.lock().expect("hook lock") = Some(step);
    }

    /// Queues a batch for the writer (a barrier's fenced on `barrier_on`'s partition).
    fn queue_batch(
        &self,
        ops: Vec<WriteOp>,
        barrier_on: Option<u64>,
        placements: Vec<Arc<Placement>>,
    ) -> CommitWaiter {
        let (done, rx) = oneshot::channel();
        let waiter = CommitWaiter::new(rx);
        if self.shared.closed.load(Ordering::SeqCst) {
            let _ = done.send(Err(StorageError::Closed));
            return waiter;
        }
        let bytes = ops.iter().map(WriteOp::size).sum();
        self.shared.queued.fetch_add(bytes, Ordering::Relaxed);
        self.shared.unanswered.fetch_add(1, Ordering::SeqCst);
        let batch = Batch {
            ops,
            bytes,
            barrier_on,
            placements,
            done,
        };
        let queue = self.queue.lock().expect("queue lock");
        let refused = match queue.as_ref() {
            Some(queue) => queue.send(Message::Batch(batch)).err().map(|e| e.0),
            None => Some(Message::Batch(batch)),
        };
        if let Some(Message::Batch(batch)) = refused {
            self.shared.answer(batch, Err(StorageError::Closed));
        }
        waiter
    }

    /// Queues a point read, read with the others of its kind asked meanwhile ([`lookups`]).
    fn ask<L: lookups::Lookup>(
        &self,
        queue: &mpsc::UnboundedSender<lookups::Ask<L>>,
        key: L::Key,
    ) -> Pin<Box<dyn Future<Output = Result<L::Answer, StorageError>> + Send + 'static>> {
        let (done, answer) = oneshot::channel();
        let reading = Unanswered::count(&self.shared);
        // Closed (the backend stopped): the ask is dropped, and its answer says so.
        let _ = queue.send(lookups::Ask { key, done, reading });
        Box::pin(async move { answer.await.unwrap_or(Err(StorageError::Closed)) })
    }

    /// `params` and then the filter of the scans that find work for this process (its inbox,
    /// due times, expiries, recovery): the partitions it runs and the count, the set `NULL`
    /// for every partition (a process that runs them all, or a reader).
    fn mine(&self, mut params: Vec<Param>) -> Vec<Param> {
        let owned = self.shared.owned.borrow().clone();
        let list: Option<Vec<i32>> = match (&self.reads, owned.len() == owned.count() as usize) {
            (Reads::Snapshot(_), _) | (_, true) => None,
            _ => Some(owned.iter().map(|p| p as i32).collect()),
        };
        params.push(Box::new(list));
        params.push(Box::new(self.partitions as i32));
        params
    }

    /// Runs one read statement on a pooled connection and waits for its rows.
    fn rows(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<Row>, StorageError> {
        wait(self.handle(), query(self.reads.clone(), sql, params))
            .unwrap_or(Err(StorageError::Closed))
    }
}

/// A read on its way to the database, counted in [`Storage::unanswered`] until it is answered
/// (or dropped): a test runtime is not idle while a handler waits for a round trip.
struct Unanswered(Arc<Shared>);

impl Unanswered {
    fn count(shared: &Arc<Shared>) -> Self {
        shared.unanswered.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        self.0.unanswered.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The queues of point reads, a queue per kind ([`lookups`]).
struct Asks {
    inbox: mpsc::UnboundedSender<lookups::Ask<lookups::Inbox>>,
    state: mpsc::UnboundedSender<lookups::Ask<lookups::State>>,
    record: mpsc::UnboundedSender<lookups::Ask<lookups::Record>>,
}

/// Their receiving ends, until their readers start.
struct Asked {
    inbox: mpsc::UnboundedReceiver<lookups::Ask<lookups::Inbox>>,
    state: mpsc::UnboundedReceiver<lookups::Ask<lookups::State>>,
    record: mpsc::UnboundedReceiver<lookups::Ask<lookups::Record>>,
}

impl Asks {
    fn channels() -> (Self, Asked) {
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let (state, state_rx) = mpsc::unbounded_channel();
        let (record, record_rx) = mpsc::unbounded_channel();
        let asked = Asked {
            inbox: inbox_rx,
            state: state_rx,
            record: record_rx,
        };
        (
            Self {
                inbox,
                state,
                record,
            },
            asked,
        )
    }
}

impl Asked {
    /// Starts a reader per kind on the backend's runtime.
    fn run(self, runtime: &BackendRuntime, reads: &Reads) {
        runtime.spawn(lookups::run(reads.clone(), self.inbox));
        runtime.spawn(lookups::run(reads.clone(), self.state));
        runtime.spawn(lookups::run(reads.clone(), self.record));
    }
}

/// Where reads run: pooled sessions, or a reader's one read-only transaction.
#[derive(Clone)]
enum Reads {
    Pool(Pool),
    Snapshot(Arc<tokio_postgres::Client>),
}

/// One read statement.
async fn query(
    reads: Reads,
    sql: &'static str,
    params: Vec<Param>,
) -> Result<Vec<Row>, StorageError> {
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    match reads {
        Reads::Pool(pool) => {
            let client = pool
                .get()
                .await
                .map_err(|e| StorageError::Backend(format!("no PostgreSQL connection: {e}")))?;
            let statement = client.prepare_cached(sql).await.map_err(backend)?;
            client.query(&statement, &refs).await.map_err(backend)
        }
        Reads::Snapshot(client) => client.query(sql, &refs).await.map_err(backend),
    }
}

/// The reads, by their SQL (planned as `PLANS` says; see the plans' test).
const STORED: &str = "SELECT id FROM restate_invocations WHERE id = ANY($1)";

const JOURNAL: &str = "SELECT idx, entry FROM restate_journal WHERE id = $1 ORDER BY idx";

const LIST: &str = "SELECT id, record FROM restate_invocations WHERE id > $1 ORDER BY id LIMIT $2";

const PROMISE_WAITERS: &str = "SELECT id, idx FROM restate_promise_waiters \
    WHERE service = $1 AND key = $2 AND name = $3 ORDER BY id, idx";

const UNFINISHED: &str = "SELECT id, hint FROM restate_invocations WHERE hint IS NOT NULL AND id > $1 \
    AND ($3::int[] IS NULL OR restate_partition(partition_key, $4::int) = ANY($3)) ORDER BY id LIMIT $2";

const DUE: &str = "SELECT due_ms, id FROM restate_invocations WHERE due_ms IS NOT NULL \
    AND (due_ms, id) > ($1, $2) AND due_ms <= $3 AND ($5::int[] IS NULL OR restate_partition(partition_key, $6::int) = ANY($5)) \
    ORDER BY due_ms, id LIMIT $4";

const RESULT_WAITERS_OF: &str = "SELECT source, waiter, idx, call FROM restate_result_waiters \
    WHERE source = $1 ORDER BY source, waiter, idx";

const EXPIRED: &str = "SELECT id, record FROM restate_invocations WHERE expires_at_ms <= $1 \
    AND ($3::int[] IS NULL OR restate_partition(partition_key, $4::int) = ANY($3)) ORDER BY expires_at_ms, id LIMIT $2";

const STATE_NAMES: &str =
    "SELECT name FROM restate_state WHERE service = $1 AND key = $2 ORDER BY name";

const PROMISE: &str =
    "SELECT outcome FROM restate_promises WHERE service = $1 AND key = $2 AND name = $3";

const DUE_COUNT: &str = "SELECT count(*) FROM restate_invocations WHERE due_ms IS NOT NULL \
    AND ($1::int[] IS NULL OR restate_partition(partition_key, $2::int) = ANY($1))";

const RESULT_WAITERS: &str = "SELECT source, waiter, idx, call FROM restate_result_waiters \
    ORDER BY source, waiter, idx";

const WOKEN: &str = "SELECT DISTINCT id FROM restate_wakes ORDER BY id";

const INBOX_PAGE: &str = "SELECT seq, id, message FROM (SELECT seq, id, message, \
    sum(octet_length(message)) OVER (ORDER BY seq) - octet_length(message) AS before \
    FROM restate_inbox WHERE ($3::int[] IS NULL OR restate_partition(partition_key, $4::int) = ANY($3)) ORDER BY seq LIMIT $1) page \
    WHERE before < $2 ORDER BY seq";

/// The planner's settings of every session: plans that look rows up by their keys whatever
/// the tables' statistics say, made once per statement and connection.
/// - No sequential scans: a statement is planned while its tables are new and look empty,
///   when a sequential scan, or a subquery hashed over a whole table, looks cheapest, and the
///   plan stays in use as the table grows (the forwarder's insert went from 0.3 to 10 ms a
///   group within seconds of a fresh start). Every statement here reads or writes by key; the
///   tables without an index on what is asked (partitions, members) are scanned still, as no
///   other plan exists.
/// - No JIT compilation: a scan with no other plan then costs past its thresholds, and a
///   statement of a few rows never gains from it (a members' prune took 13-88 ms with it).
/// - Generic plans only: PostgreSQL otherwise plans an execution again whenever a plan for
///   the parameters at hand looks cheaper than the generic one, which it does for the array
///   parameters of grouped statements (echo at concurrency 1 spent about 0.08 ms of its 0.55
///   ms so), and such a plan for a large group may read a whole index. The generic plans are
///   the ones the plans' test checks.
///
/// The connection URL's own `options` come after these, so an operator can override them.
pub(super) const PLANS: &str =
    "-c enable_seqscan=off -c jit=off -c plan_cache_mode=force_generic_plan";

/// Sets the sessions' `-c name=value` settings: `defaults`, then those the connection URL
/// gave (which override them, coming later), then `forced` (which override those).
pub(super) fn with_session_options(
    config: &mut tokio_postgres::Config,
    defaults: &str,
    forced: &str,
) {
    let own = config.get_options().unwrap_or_default();
    let all: Vec<&str> = [defaults, own, forced]
        .into_iter()
        .filter(|options| !options.is_empty())
        .collect();
    let all = all.join(" ");
    config.options(&all);
}

/// Channels the writer notifies on: a message arrived in an inbox, an invocation finished,
/// partitions were released (by a drain, or offered back).
pub(super) const INBOX_CHANNEL: &str = "restate_inbox";
pub(super) const FINISHED_CHANNEL: &str = "restate_finished";
pub(super) const RELEASED_CHANNEL: &str = "restate_released";

/// Keeps one connection listening for other processes' notifications: an inbox message
/// bumps `inbox`, released partitions bump `released`, finished invocations (their ids in
/// the payload) wake their waiters. After a lost connection it connects again, and everyone
/// looks again (what was notified meanwhile is read from the store).
async fn listen(
    config: tokio_postgres::Config,
    inbox: watch::Sender<u64>,
    released: watch::Sender<u64>,
    finished: Finished,
) {
    let bump = |counter: &watch::Sender<u64>| counter.send_modify(|n| *n = n.wrapping_add(1));
    let everyone = || {
        bump(&inbox);
        bump(&released);
        finished.all();
    };
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let sql = format!(
                    "LISTEN {INBOX_CHANNEL}; LISTEN {FINISHED_CHANNEL}; LISTEN {RELEASED_CHANNEL}"
                );
                let listening = client.batch_execute(&sql);
                let messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
                let drive = messages.for_each(|message| {
                    if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = message {
                        match n.channel() {
                            INBOX_CHANNEL => bump(&inbox),
                            RELEASED_CHANNEL => bump(&released),
                            _ => match finished_ids(n.payload()) {
                                Some(ids) => finished.finished(ids),
                                None => finished.all(),
                            },
                        }
                    }
                    std::future::ready(())
                });
                // The connection is driven by `drive`; the LISTEN goes out on it meanwhile.
                let mut drive = std::pin::pin!(drive);
                tokio::select! {
                    listened = listening => match listened {
                        Ok(()) => {
                            everyone();
                            drive.await;
                        }
                        Err(e) => tracing::warn!(
                            "listening for other processes failed: {}",
                            pg_error(&e)
                        ),
                    },
                    () = &mut drive => {}
                }
            }
            Err(e) => tracing::warn!(
                "cannot connect to listen for other processes: {}",
                pg_error(&e)
            ),
        }
        if inbox.is_closed() {
            return;
        }
        everyone();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The invocations a `restate_finished` payload names (ids separated by commas), or `None`
/// when it names none or cannot be read: then every waiter looks.
fn finished_ids(payload: &str) -> Option<Vec<InvocationId>> {
    if payload.is_empty() {
        return None;
    }
    payload.split(',').map(|id| id.parse().ok()).collect()
}

/// The payloads that name `ids`, each within PostgreSQL's 8,000-byte limit.
pub(super) fn finished_payloads(ids: &[InvocationId]) -> Vec<String> {
    const MAX: usize = 7_900;
    let mut payloads = vec![String::new()];
    for id in ids {
        let id = id.to_string();
        let last = payloads.last_mut().expect("one at least");
        if !last.is_empty() && last.len() + 1 + id.len() > MAX {
            payloads.push(id);
        } else {
            if !last.is_empty() {
                last.push(',');
            }
            last.push_str(&id);
        }
    }
    payloads
}

/// Runs `work` on the backend's runtime and blocks this thread until it is done (`None` when
/// that runtime has stopped). The caller is never one of that runtime's own threads.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    // The round trip holds up only its caller, not every task queued behind it on a worker.
    super::hand_worker_on(|| rx.recv().ok())
}

/// Answers each caller of a group read or written by one statement: its own answer (which
/// may be an error of its own), in the order they came, or the statement's error.
fn answer_each<T>(
    callers: impl IntoIterator<Item = oneshot::Sender<Result<T, StorageError>>>,
    answers: Result<Vec<Result<T, StorageError>>, StorageError>,
) {
    match answers {
        Ok(answers) => {
            for (caller, answer) in callers.into_iter().zip(answers) {
                let _ = caller.send(answer);
            }
        }
        Err(e) => {
            for caller in callers {
                let _ = caller.send(Err(e.clone()));
            }
        }
    }
}

/// A driver error with its cause (tokio-postgres's own message is only "db error").
pub(super) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn backend(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(pg_error(&e))
}

fn key(id: &InvocationId) -> Param {
    Box::new(id.storage_key().to_vec())
}

fn id_at(row: &Row, column: usize) -> Result<InvocationId, StorageError> {
    InvocationId::from_storage_key(row.get::<_, &[u8]>(column))
        .ok_or_else(|| StorageError::Decode("an invocation id of the wrong length".into()))
}

fn index_at(row: &Row, column: usize) -> Result<u32, StorageError> {
    u32::try_from(row.get::<_, i64>(column))
        .map_err(|_| StorageError::Decode("a journal index out of range".into()))
}

/// A service, key or state name: stored as its UTF-8 bytes.
fn bytes(name: &str) -> Param {
    Box::new(name.as_bytes().to_vec())
}

fn scope_params(scope: &StateScope) -> Vec<Param> {
    vec![bytes(&scope.service), bytes(&scope.key)]
}

/// A time in ms as `bigint`: times past `i64::MAX` (a retention or a sleep of
/// `Duration::MAX`) are kept at its largest value, still in the future for any clock.
fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A row limit as `bigint`.
fn limit(n: usize) -> Param {
    Box::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Storage for PostgresStorage {
    fn submit(&self, ops: Vec<WriteOp>) -> CommitWaiter {
        self.queue_batch(ops, None, Vec::new())
    }

    fn submit_fenced(&self, ops: Vec<WriteOp>, partition_key: u64) -> CommitWaiter {
        self.queue_batch(ops, Some(partition_key), Vec::new())
    }

    fn submit_placing(
        &self,
        ops: Vec<WriteOp>,
        fenced_on: Option<u64>,
        placements: Vec<Arc<Placement>>,
    ) -> CommitWaiter {
        self.queue_batch(ops, fenced_on, placements)
    }

    fn invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>, StorageError> {
        wait(self.handle(), self.ask(&self.asks.record, *id)).unwrap_or(Err(StorageError::Closed))
    }

    fn invocation_async(&self, id: &InvocationId) -> RecordWaiter {
        self.ask(&self.asks.record, *id)
    }

    fn stored(&self, ids: &[InvocationId]) -> Result<Vec<bool>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.storage_key().to_vec()).collect();
        let rows = self.rows(STORED, vec![Box::new(keys.clone())])?;
        let found: std::collections::HashSet<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        Ok(keys.iter().map(|k| found.contains(k)).collect())
    }

    fn journal(&self, id: &InvocationId) -> Result<Vec<(u32, JournalEntry)>, StorageError> {
        let rows = self.rows(JOURNAL, vec![key(id)])?;
        rows.iter()
            .map(|row| Ok((index_at(row, 0)?, records::decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    fn state(&self, scope: &StateScope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let asked = self.ask(&self.asks.state, (scope.clone(), name.to_owned()));
        wait(self.handle(), asked).unwrap_or(Err(StorageError::Closed))
    }

    fn state_async(&self, scope: &StateScope, name: &str) -> crate::storage::StateWaiter {
        self.ask(&self.asks.state, (scope.clone(), name.to_owned()))
    }

    fn state_keys(&self, scope: &StateScope) -> Result<Vec<String>, StorageError> {
        let rows = self.rows(STATE_NAMES, scope_params(scope))?;
        rows.iter()
            .map(|row| {
                String::from_utf8(row.get(0))
                    .map_err(|_| StorageError::Decode("a state name that is not UTF-8".into()))
            })
            .collect()
    }

    fn promise(&self, scope: &StateScope, name: &str) -> Result<Option<Outcome>, StorageError> {
        let mut params = scope_params(scope);
        params.push(bytes(name));
        let rows = self.rows(PROMISE, params)?;
        rows.first()
            .map(|row| Ok(records::decode(row.get::<_, &[u8]>(0))?))
            .transpose()
    }

    fn invocations(
        &self,
        after: Option<InvocationId>,
        limit_n: usize,
    ) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError> {
        let after: Vec<u8> = after
            .map(|id| id.storage_key().to_vec())
            .unwrap_or_default();
        let rows = self.rows(LIST, vec![Box::new(after), limit(limit_n)])?;
        rows.iter()
            .map(|row| Ok((id_at(row, 0)?, records::decode(row.get::<_, &[u8]>(1))?)))
            .collect()
    }

    fn promise_waiters(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Vec<(InvocationId, u32)>, StorageError> {
        let mut params = scope_params(scope);
        params.push(bytes(name));
        let rows = self.rows(PROMISE_WAITERS, params)?;
        rows.iter()
            .map(|row| Ok((id_at(row, 0)?, index_at(row, 1)?)))
            .collect()
    }

    fn unfinished(&self) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.unfinished_where(&mut |_, _| true)
    }

    fn unfinished_where(
        &self,
        keep: &mut dyn FnMut(InvocationId, Option<HintHead>) -> bool,
    ) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        // In pages, and only the hints `keep` accepts are decoded and kept: a recovery over a
        // million waiting invocations holds one page of the others at a time.
        const PAGE: usize = 10_000;
        let mut out = Vec::new();
        let mut after: Vec<u8> = Vec::new();
        loop {
            let rows = self.rows(
                UNFINISHED,
                self.mine(vec![Box::new(after.clone()), limit(PAGE)]),
            )?;
            for row in &rows {
                let id = id_at(row, 0)?;
                let bytes: &[u8] = row.get(1);
                if keep(id, UnfinishedHint::encoded_head(bytes)) {
                    out.push((id, UnfinishedHint::decode(bytes)?.hint));
                }
            }
            match rows.last() {
                Some(last) if rows.len() == PAGE => after = last.get::<_, Vec<u8>>(0),
                _ => return Ok(out),
            }
        }
    }

    fn due(
        &self,
        after: Option<(u64, InvocationId)>,
        until_ms: u64,
        limit_n: usize,
    ) -> Result<Vec<(u64, InvocationId)>, StorageError> {
        // No entry sorts before (-1, empty id): due times are never negative.
        let (after_ms, after_id) = match after {
            Some((at, id)) => (millis(at), id.storage_key().to_vec()),
            None => (-1, Vec::new()),
        };
        let rows = self.rows(
            DUE,
            self.mine(vec![
                Box::new(after_ms),
                Box::new(after_id),
                Box::new(millis(until_ms)),
                limit(limit_n),
            ]),
        )?;
        rows.iter()
            .map(|row| Ok((row.get::<_, i64>(0) as u64, id_at(row, 1)?)))
            .collect()
    }

    fn due_len(&self) -> Result<u64, StorageError> {
        let rows = self.rows(DUE_COUNT, self.mine(Vec::new()))?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0) as u64))
    }

    fn result_waiters(
        &self,
        source: Option<&InvocationId>,
    ) -> Result<Vec<ResultWaiter>, StorageError> {
        let rows = match source {
            Some(id) => self.rows(RESULT_WAITERS_OF, vec![key(id)])?,
            None => self.rows(RESULT_WAITERS, Vec::new())?,
        };
        rows.iter()
            .map(|row| {
                Ok(ResultWaiter {
                    source: id_at(row, 0)?,
                    waiter: id_at(row, 1)?,
                    index: index_at(row, 2)?,
                    call: row.get(3),
                })
            })
            .collect()
    }

    fn woken(&self) -> Result<Vec<InvocationId>, StorageError> {
        let rows = self.rows(WOKEN, Vec::new())?;
        rows.iter().map(|row| id_at(row, 0)).collect()
    }

    fn expired(
        &self,
        now_ms: u64,
        limit_n: usize,
    ) -> Result<Vec<(InvocationId, Option<Target>)>, StorageError> {
        let rows = self.rows(
            EXPIRED,
            self.mine(vec![Box::new(millis(now_ms)), limit(limit_n)]),
        )?;
        rows.iter()
            .map(|row| {
                let target = records::decode_target(row.get::<_, &[u8]>(1))?;
                Ok((id_at(row, 0)?, Some(target)))
            })
            .collect()
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn writer_stats(&self) -> WriterStats {
        let mut stats = *self.shared.stats.lock().expect("stats lock");
        stats.queued_bytes = self.shared.queued.load(Ordering::Relaxed) as u64;
        stats
    }

    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn writer_busy(&self) -> Result<(), super::WriterBusy> {
        super::check_writer_queue(
            self.shared.queued.load(Ordering::Relaxed),
            self.max_queued_bytes,
        )
    }

    fn unanswered(&self) -> usize {
        self.shared.unanswered.load(Ordering::SeqCst)
    }

    fn ownership(&self) -> watch::Receiver<bool> {
        self.shared.owner.subscribe()
    }

    fn owned(&self) -> watch::Receiver<Partitions> {
        self.shared.owned.subscribe()
    }

    fn lease_clock(&self) -> Option<watch::Receiver<Option<std::time::Duration>>> {
        Some(self.shared.held_until.subscribe())
    }

    fn release_lease(&self, release: bool) -> CommitWaiter {
        let (done, rx) = oneshot::channel();
        let waiter = CommitWaiter::new(rx);
        let queue = self.queue.lock().expect("queue lock");
        let sent = match queue.as_ref() {
            Some(queue) if *self.shared.owner.borrow() => {
                queue.send(Message::Release(release, done)).map_err(|e| e.0)
            }
            _ => Err(Message::Release(release, done)),
        };
        if let Err(Message::Release(_, done)) = sent {
            // A standby, one that handed its lease over, or a closed store: no lease to change.
            let _ = done.send(Err(StorageError::Backend(
                "this process holds no lease".into(),
            )));
        }
        waiter
    }

    fn left(&self, partitions: &Partitions) {
        if let Some(queue) = self.queue.lock().expect("queue lock").as_ref() {
            let _ = queue.send(Message::Left(partitions.clone()));
        }
    }

    fn forward(&self, id: InvocationId, message: InboxMessage) -> ForwardWaiter {
        // A killed test store forwards nothing, as a killed process does not.
        if self.shared.dead() {
            return Box::pin(async { Err(StorageError::Closed) });
        }
        let (done, answer) = oneshot::channel();
        let outgoing = forwarder::Outgoing {
            id,
            starts: message.starts_invocation(),
            encoded: records::encode(&message),
            done,
        };
        if let Err(refused) = self.outgoing.send(outgoing) {
            let _ = refused.0.done.send(Err(StorageError::Closed));
        }
        Box::pin(async move { answer.await.unwrap_or(Err(StorageError::Closed)) })
    }

    fn inbox(&self, limit_n: usize, max_bytes: usize) -> Result<Vec<Inbound>, StorageError> {
        // The bytes before each message, summed in seq order as the index yields them: the
        // page stops at the first message past the budget, without reading the rest.
        let rows = self.rows(
            INBOX_PAGE,
            self.mine(vec![limit(limit_n), limit(max_bytes)]),
        )?;
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq = row.get::<_, i64>(0) as u64;
            match records::decode(row.get::<_, &[u8]>(2)) {
                Ok(message) => page.push(Inbound {
                    seq,
                    id: id_at(row, 1)?,
                    message,
                }),
                // Left for a binary that knows it (a newer one, during a rolling deploy).
                Err(e) => tracing::warn!(seq, "an inbox message this binary cannot read: {e}"),
            }
        }
        Ok(page)
    }

    fn inbox_pending(&self, id: &InvocationId) -> Result<InboxPending, StorageError> {
        wait(self.handle(), self.ask(&self.asks.inbox, *id)).unwrap_or(Err(StorageError::Closed))
    }

    fn inbox_pending_async(&self, id: &InvocationId) -> crate::storage::InboxPendingWaiter {
        self.ask(&self.asks.inbox, *id)
    }

    fn first_acceptance(&self, id: InvocationId) -> Option<Arc<crate::storage::Acceptance>> {
        Some(self.shared.acceptances.register(id))
    }

    fn signals(&self) -> Option<Signals> {
        Some(self.signals.clone())
    }

    fn peers(&self) -> Option<Peers> {
        self.peers.clone()
    }

    fn backup(&self, _dir: &std::path::Path) -> Result<super::BackupReport, super::BackupError> {
        Err(super::BackupError::Unsupported(
            "on PostgreSQL the database's own backups are the backups (pg_dump, pg_basebackup, \
             point-in-time recovery): this endpoint copies a redb data folder only"
                .into(),
        ))
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let Some(queue) = self.queue.lock().expect("queue lock").take() else {
            return;
        };
        if !*self.shared.owner.borrow() {
            // A standby has no writer, and nothing queued: it submits nothing.
            return;
        }
        // Leaving for good: what is queued commits first, then the partitions are released,
        // so that the other processes take them at once (notified), not at their next lease
        // round once this session has ended. A refused release (a store failed, a hand-over
        // done) changes nothing; its answer is not waited for, the close's is.
        let (released, _) = oneshot::channel();
        let _ = queue.send(Message::Release(true, released));
        let (ack, flushed) = std::sync::mpsc::channel();
        if queue.send(Message::Close(ack)).is_ok() {
            // Bounded: a database that stopped answering must not hold a shutdown forever.
            let _ = flushed.recv_timeout(CLOSE_PATIENCE);
        }
    }
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        self.close();
    }
}

/// The backend's own runtime (one thread), shut down without waiting when dropped: a handle
/// may be dropped inside another runtime, where waiting is not allowed.
struct BackendRuntime(Option<tokio::runtime::Runtime>);

impl BackendRuntime {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("restate-postgres")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }

    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle().spawn(work);
    }
}

impl Drop for BackendRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

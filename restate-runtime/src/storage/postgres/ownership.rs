//! Who may write: one process runs on a database at a time, by a lease. Taking it over bumps
//! the lease's epoch; every transaction of the owner first calls `restate_fence` with the
//! epoch it took, which renews the lease by the database's clock and aborts the transaction
//! if another process has taken over since. So a process paused past its lease (SIGSTOP, a
//! long GC-like stall, a network partition) and then continued commits nothing: its first
//! transaction fails, and its writer stops (law 10).
//!
//! A lease may be taken over once it has expired (`RESTATE_LEASE_TTL` after its last renewal,
//! by the database's clock), or at once when the owner's database session is gone (a killed
//! process's connection closes, and its server process with it): a restart does not wait.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// The lease this process took: the epoch its transactions must still find.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    pub(super) epoch: i64,
    pub(super) ttl_ms: i64,
}

/// Takes the lease on `client`'s session, waiting for the owner to go or its lease to expire,
/// up to `patience` (`None`: as long as it takes, as a standby does).
pub(super) async fn claim(
    client: &Client,
    ttl: Duration,
    patience: Option<Duration>,
) -> Result<Option<Lease>, tokio_postgres::Error> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
    let take = client
        .prepare(
            // SKIP LOCKED: an owner's transaction in progress (it holds the row) is not waited
            // for and then judged by the lease it had before; the next try sees its renewal.
            "UPDATE restate_lease SET epoch = epoch + 1, owner_pid = pg_backend_pid(), \
             expires_at = clock_timestamp() + $1::bigint * interval '1 millisecond' \
             WHERE id = (SELECT id FROM restate_lease l WHERE l.id = 0 \
             AND (l.expires_at < clock_timestamp() OR l.owner_pid IS NULL \
             OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.owner_pid)) \
             FOR UPDATE SKIP LOCKED) RETURNING epoch",
        )
        .await?;
    let started = Instant::now();
    let mut logged = false;
    loop {
        if let Some(row) = client.query_opt(&take, &[&ttl_ms]).await? {
            return Ok(Some(Lease {
                epoch: row.get(0),
                ttl_ms,
            }));
        }
        if patience.is_some_and(|p| started.elapsed() >= p) {
            return Ok(None);
        }
        if !logged {
            tracing::info!(
                "another process runs this database's invocations; this one forwards what it \
                 accepts to it, and takes over once it stops or its lease ({ttl:?}) expires"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

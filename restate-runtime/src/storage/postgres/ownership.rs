//! Who may write: until partitions are leased per process, one process runs on a database at
//! a time. The writer's connection holds a session advisory lock for its whole life; a second
//! process waits for it (a killed owner's connection closes and the lock goes with it) and
//! gives up after a while. A process whose connection is lost loses the lock with it, and its
//! writer stops (law 10), so two processes never write the same partitions.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// The lock's key: "restate" and the number 2 (the migration lock is 1).
const OWNER_LOCK: i64 = 0x7265_7374_6174_6532;

/// Takes the lock on `client`'s session, waiting up to `patience` for another holder to go:
/// whether it was taken.
pub(super) async fn claim(
    client: &Client,
    patience: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&OWNER_LOCK])
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(true);
        }
        if started.elapsed() >= patience {
            return Ok(false);
        }
        if !logged {
            tracing::warn!(
                "another process runs on this database; waiting up to {patience:?} for it to stop"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! The PostgreSQL schema: versioned migrations (refinery, embedded at build time from
//! `restate-runtime/migrations/postgres/`) applied at open under an advisory lock, the
//! check that refuses a schema newer than this binary can run, and the deployment's fixed
//! facts (partition count, secret) recorded when the database is first opened.

use tokio_postgres::Client;

/// The newest migration this binary carries: the schema version it writes.
pub(crate) const SCHEMA_VERSION: i32 = 5;

/// Held while migrating, so that processes starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x7265_7374_6174_6531; // "restate1"

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Why a database cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error("{0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error(
        "the database's schema needs a binary that knows schema version {needs} or later; \
         this binary knows up to {SCHEMA_VERSION} (deploy the newer binary, or restore a \
         backup taken before the upgrade)"
    )]
    TooNew { needs: i32 },
    #[error(
        "the database applied migration V{version}__{applied} that differs from this binary's \
         V{version}__{ours} (a development build's, changed after it was applied): this binary \
         cannot run on this database; restore it from a backup taken before, or start on a \
         new database"
    )]
    Divergent {
        version: i32,
        applied: String,
        ours: String,
    },
    #[error("the database's `restate_meta` row {0} is malformed")]
    Malformed(&'static str),
}

/// What every process of one deployment shares, fixed when the database was first opened.
pub(crate) struct Deployment {
    pub(crate) partitions: u32,
    pub(crate) secret: [u8; 32],
}

/// Brings the schema up to this binary's version (migrations a newer binary applied are left
/// alone: expand/contract keeps them runnable), checks that this binary may run on it, and
/// reads (or, the first time, records) the deployment's partition count and secret.
pub(crate) async fn prepare(
    client: &mut Client,
    partitions: u32,
) -> Result<Deployment, SchemaError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let checked = check_history(client).await;
    if checked.is_err() {
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        checked?;
    }
    let migrated = embedded::migrations::runner()
        .set_abort_missing(false)
        .set_migration_table_name("restate_schema_history")
        .run_async(client)
        .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    migrated?;
    unlocked?;

    check_version(client).await?;
    let secret: [u8; 32] = rand::random();
    client
        .execute(
            "INSERT INTO restate_meta (name, value) VALUES ('partitions', int4send($1)), \
             ('secret', $2) ON CONFLICT (name) DO NOTHING",
            &[&(partitions.max(1) as i32), &secret.as_slice()],
        )
        .await?;
    let deployment = read(client).await?;
    // Every partition has its lease row, free until a process takes it.
    client
        .execute(
            "INSERT INTO restate_partitions (partition, epoch, owner_pid, expires_at) \
             SELECT p, 0, NULL, '-infinity' FROM generate_series(0, $1 - 1) p \
             ON CONFLICT (partition) DO NOTHING",
            &[&(deployment.partitions as i32)],
        )
        .await?;
    Ok(deployment)
}

/// Refuses a schema that needs a newer binary.
async fn check_version(client: &Client) -> Result<(), SchemaError> {
    let needs = meta_int(client, "oldest_binary_schema").await?;
    if needs > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { needs });
    }
    Ok(())
}

/// Refuses a database whose applied migrations differ from this binary's of the same version
/// (a migration is never changed once committed; the test below pins them): a start would
/// fail in the migration runner, and a replay check must not pass what cannot start. A
/// database with no history yet (a new one) passes.
async fn check_history(client: &Client) -> Result<(), SchemaError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('restate_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(());
    }
    let applied = client
        .query(
            "SELECT version, name, checksum FROM restate_schema_history ORDER BY version",
            &[],
        )
        .await?;
    let runner = embedded::migrations::runner();
    for row in applied {
        let (version, name, checksum): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
        let ours = runner
            .get_migrations()
            .iter()
            .find(|m| i64::from(m.version()) == i64::from(version));
        if let Some(ours) = ours
            && (ours.name() != name || ours.checksum().to_string() != checksum)
        {
            return Err(SchemaError::Divergent {
                version,
                applied: name,
                ours: ours.name().to_owned(),
            });
        }
    }
    Ok(())
}

/// The deployment's facts, read without changing anything (a replay check's open): the
/// schema must be one this binary runs on.
pub(crate) async fn read(client: &Client) -> Result<Deployment, SchemaError> {
    check_history(client).await?;
    check_version(client).await?;
    let partitions = meta_int(client, "partitions").await?;
    let secret = meta(client, "secret")
        .await?
        .try_into()
        .map_err(|_| SchemaError::Malformed("secret"))?;
    Ok(Deployment {
        partitions: u32::try_from(partitions).map_err(|_| SchemaError::Malformed("partitions"))?,
        secret,
    })
}

async fn meta(client: &Client, name: &'static str) -> Result<Vec<u8>, SchemaError> {
    let row = client
        .query_opt("SELECT value FROM restate_meta WHERE name = $1", &[&name])
        .await?
        .ok_or(SchemaError::Malformed(name))?;
    Ok(row.get(0))
}

async fn meta_int(client: &Client, name: &'static str) -> Result<i32, SchemaError> {
    let bytes: [u8; 4] = meta(client, name)
        .await?
        .try_into()
        .map_err(|_| SchemaError::Malformed(name))?;
    Ok(i32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    /// Every migration as it was committed: a database that applied one refuses a binary whose
    /// copy differs (found from outside: an early database could not be upgraded, its first
    /// migration edited after it was applied). Change the schema with a new migration.
    #[test]
    fn committed_migrations_are_never_changed() {
        const COMMITTED: [(u32, &str, u64); 5] = [
            (1, "initial", 13986160260050167771),
            (2, "inbox", 13552394158378006238),
            (3, "partition_leases", 8539233296676113372),
            (4, "fence_in_one_statement", 8678976964437845416),
            (5, "ingress_urls", 5878136743871673087),
        ];
        let runner = super::embedded::migrations::runner();
        let mut ours: Vec<(u32, &str, u64)> = runner
            .get_migrations()
            .iter()
            .map(|m| (m.version() as u32, m.name(), m.checksum()))
            .collect();
        ours.sort_unstable();
        assert_eq!(
            ours[..COMMITTED.len()],
            COMMITTED,
            "a committed migration was changed: add a new one instead"
        );
        assert_eq!(ours.len() as i32, super::SCHEMA_VERSION);
    }
}

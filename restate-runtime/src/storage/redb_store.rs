//! The redb backend: the store file and its write-ahead log in the data folder, one writer
//! thread doing group commit.
//!
//! Decisions, made knowingly:
//! - **Durability**: a caller is answered only after its batch is fsynced: as a record of the
//!   write-ahead log, or (when the log is full) in a redb commit with `Durability::Immediate`.
//! - **Group commit** (`writer`): the writer thread drains everything queued since its last
//!   commit into one commit, so concurrent requests share one fsync. It is an OS thread because
//!   a commit blocks on fdatasync. A group holds a bounded number of batches and about
//!   [`RedbOptions::max_group_bytes`]; while more than [`RedbOptions::max_queued_bytes`] wait
//!   for the writer, new work is refused ([`Storage::admit_new_work`]), so memory held by
//!   queued writes stays bounded however fast requests arrive.
//! - **Write-ahead log** (`wal`): the group is first appended to the log and synced (one
//!   sequential write), then committed to redb without a sync, so readers see it only once it is
//!   durable. The log has two segments (`log`): when one is full, appends go to the other while
//!   a second thread commits redb durably (a checkpoint), and groups logged meanwhile are
//!   acknowledged at once and applied when it ends (a read of a record or state value they
//!   wrote finds it among them; other reads wait for them). redb also commits
//!   durably after [`RedbOptions::idle_checkpoint`] without writes and at close; the log's tail
//!   is replayed at open.
//! - **Repair**: quick repair is on for durable commits (checkpoints): each saves redb's
//!   allocator state, at the price of a second fsync (on the checkpointer's thread, or the
//!   writer's for an idle, oversized or closing checkpoint), so opening
//!   after a crash loads it instead of walking every tree (1.97 s → 0.36 s with a million
//!   suspended invocations, `BENCHMARKS.md`).
//! - **Cache**: redb's page cache defaults to 1 GiB; we default to 64 MiB (configurable), since
//!   the engine keeps hot invocations in memory and reads the store mostly on recovery.

use std::collections::BTreeMap;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use tokio::sync::{oneshot, watch};

use super::derived_ids::{self, DerivedIds};
use super::files::{Files, OsFiles};
use super::kept_aside::{Found, LatestWrites};
use super::log::Log;
#[cfg(test)]
use super::log::SEGMENT_NAMES;
use super::records::{self, InvocationRecord, JournalEntry, Outcome};
use super::space::Reserve;
use super::wal::WalError;
use super::writer::{Request, Visibility, Writer, WriterLimits};
use super::{
    BackupError, BackupReport, CommitWaiter, HintHead, OpenError, StateScope, Storage,
    StorageError, UnfinishedHint, WriteOp, WriterStats,
};
use crate::ids::InvocationId;
use crate::maps::{FastMap, FastSet};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const INVOCATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("invocations");
/// Key: invocation id (24 bytes) then entry index (u32 big-endian).
const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal");
/// Ids of invocations not yet completed: recovery scans this, not every invocation.
const UNFINISHED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unfinished");
/// Key: expiry time in ms (u64 big-endian) then invocation id: the purger's index.
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");
/// Due-time index of unfinished invocations with a timer (a delayed start, a suspended
/// sleep): (due ms big-endian, invocation) → (). Kept in step with each one's recovery hint.
const DUE: TableDefinition<&[u8], ()> = TableDefinition::new("due");

/// Key: length-prefixed service and object key, then the state name.
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");

/// Key: as `STATE`; value: the encoded outcome of a completed durable promise.
const PROMISES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("promises");

/// Key: the promise's key (as `PROMISES`), its name's length, then waiting invocation id and
/// entry index.
const PROMISE_WAITERS: TableDefinition<&[u8], ()> = TableDefinition::new("promise_waiters");

/// Key: as `JOURNAL` (invocation id, entry index): a completion a suspension has not seen yet.
/// Created at open when missing, so stores of format 5 open unchanged.
const WAKEUPS: TableDefinition<&[u8], ()> = TableDefinition::new("wakeups");

/// Key: awaited invocation id, waiting invocation id, entry index (u32 big-endian); value: 1
/// for a `Call` entry, 0 for an `Attach`.
const RESULT_WAITERS: TableDefinition<&[u8], u8> = TableDefinition::new("result_waiters");

/// Version of the table layout and the log's; a store written by another version is refused
/// at open. 7: the log in two segments (a binary of format 6 would not read the second);
/// 8: recovery hints with a head (format-3 hints, which a binary of format 7 cannot decode).
const FORMAT_VERSION: u32 = 8;
/// Formats opened and upgraded by rewriting the version alone: 6 (a one-file log, read as the
/// first segment) and 7 (hints without a head, which decode as before).
const FORMATS_UPGRADED_AS_THEY_ARE: [u32; 2] = [6, 7];
/// The format before the due-time index: opened, and upgraded (the index is built at open), so
/// a binary that cannot keep the index up to date no longer opens the store.
const FORMAT_BEFORE_DUE_INDEX: u32 = 5;
const FILE_NAME: &str = "journal.redb";
/// What a backup writes its copy to, renamed to [`FILE_NAME`] once the copy is durable: a
/// backup cut short (a crash, a full disk) leaves a folder that does not open as an empty store.
const PARTIAL_NAME: &str = "journal.redb.partial";
/// Key in `META`: sequence number of the last log record the durable store includes.
const WAL_APPLIED: &str = "wal_applied";
/// Key in `META`: the store's identity, mixed into the checksum of every log record.
const WAL_SALT: &str = "wal_salt";
/// META key of the store's secret: 32 random bytes drawn when the store is created, behind
/// awakeable ids and `ctx.rand()` seeds, so that outsiders can compute neither.
const SECRET: &str = "secret";
/// META key present once the due-time index is built (stores from before it get it at open).
const DUE_INDEX: &str = "due_index";

/// Free space kept by default: room for the log to grow and the store to checkpoint it.
pub(crate) const DEFAULT_MIN_FREE_BYTES: u64 = 32 * 1024 * 1024;
/// Bytes waiting for the writer above which new work is refused, by default.
pub(crate) const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Bytes one commit group takes at most by default (a single larger batch commits alone).
pub(crate) const DEFAULT_MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// How to open a redb store.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Page cache size in bytes.
    pub cache_bytes: usize,
    /// Partitions for a new store (an existing store keeps its own).
    pub partitions: u32,
    /// After this long without writes, the store commits what the write-ahead log holds
    /// durably, so a restart after a quiet spell has nothing to replay.
    pub idle_checkpoint: std::time::Duration,
    /// Free disk space kept for the work already accepted: below it new work is refused, and
    /// opening waits until it is free (0 turns the check off).
    pub min_free_bytes: u64,
    /// Bytes submitted and not yet committed above which new work is refused until the
    /// writer catches up.
    pub max_queued_bytes: usize,
    /// Bytes one commit takes at most: what is queued beyond goes into the next commit (a
    /// single larger batch commits alone).
    pub max_group_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            partitions: 256,
            idle_checkpoint: std::time::Duration::from_secs(1),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
        }
    }
}

/// The redb-backed [`Storage`].
pub struct RedbStorage {
    db: Arc<Database>,
    partitions: u32,
    secret: [u8; 32],
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Reads find acknowledged writes not applied yet here, or wait on it for them.
    visibility: Arc<Visibility>,
    /// Which derived ids redb may hold a record of.
    derived: Arc<DerivedIds>,
    stats: Arc<Mutex<WriterStats>>,
    failure: Arc<watch::Sender<Option<String>>>,
    reserve: Reserve,
    /// Bytes submitted and not yet answered by the writer.
    queued: Arc<AtomicUsize>,
    /// Batches submitted and not yet answered.
    unanswered: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Held by a backup while it copies.
    backups: Mutex<()>,
}

impl RedbStorage {
    /// Opens (or creates) the store in `dir` and starts its writer thread. With less than
    /// [`RedbOptions::min_free_bytes`] free on its disk, it first waits for space, logging why.
    pub fn open(dir: &Path, options: &RedbOptions) -> Result<Self, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Reserve::new(dir, options.min_free_bytes).wait_for_room();
        Self::open_with(dir, options, &OsFiles)
    }

    /// [`RedbStorage::open`] on the files of `files` (in tests, a simulated disk), without
    /// creating the folder or waiting for free space.
    pub(super) fn open_with(
        dir: &Path,
        options: &RedbOptions,
        files: &dyn Files,
    ) -> Result<Self, OpenError> {
        let shown = dir.display().to_string();
        if dir.join(PARTIAL_NAME).exists() {
            return Err(OpenError::Corrupt {
                path: shown,
                reason: format!(
                    "it holds a backup that was cut short ({PARTIAL_NAME}): \
                     delete the folder and make the backup again"
                ),
            });
        }
        let reserve = Reserve::new(dir, options.min_free_bytes);
        let file = dir.join(FILE_NAME);
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        // Every read of the file at open: redb panics on some damaged pages (a malformed
        // allocator state) where it returns an error on others; either is a corrupt store.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = files
                .open_store(&builder, &file)
                .map_err(|e| open_error(&shown, &file, e))?;
            let (partitions, secret) =
                init_meta(&db, options.partitions).map_err(|f| f.at(&shown))?;
            // Counted before the log's records are applied: those count as any write does.
            let derived = Arc::new(count_derived(&db).map_err(|f| f.at(&shown))?);
            let log = recover_log(&db, &derived, files, dir).map_err(|f| f.at(&shown))?;
            build_due_index(&db).map_err(|f| f.at(&shown))?;
            Ok((db, partitions, secret, derived, log))
        }));
        let (db, partitions, secret, derived, log) = read.unwrap_or_else(|panic| {
            Err(OpenError::Corrupt {
                path: file.display().to_string(),
                reason: format!(
                    "reading it at open panicked ({}): most likely damaged pages (redb \
                     panics on some); restore a backup, or report it if the file is sound",
                    crate::error::panic_message(&panic)
                ),
            })
        })?;
        // The store file and the log may be new: their directory entries must be durable too.
        files.sync_parent(&file).map_err(|source| OpenError::Io {
            path: shown.clone(),
            source,
        })?;
        let db = Arc::new(db);
        let queued = Arc::new(AtomicUsize::new(0));
        let unanswered = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let failure = Arc::new(watch::channel(None).0);
        let visibility = Arc::new(Visibility::default());
        let io_error = |source| OpenError::Io {
            path: shown.clone(),
            source,
        };
        let writer = {
            let limits = WriterLimits {
                idle_checkpoint: options.idle_checkpoint,
                max_group_bytes: options.max_group_bytes,
                queued: queued.clone(),
                unanswered: unanswered.clone(),
            };
            let writer = Writer::new(
                db.clone(),
                derived.clone(),
                log,
                limits,
                stats.clone(),
                visibility.clone(),
                failure.clone(),
            )
            .map_err(io_error)?;
            let db = db.clone();
            let failure = failure.clone();
            let visibility = visibility.clone();
            std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| writer.run(&db, &rx));
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let reason = crate::error::panic_message(&panic);
                        let reason = format!("journal writer panicked: {reason}");
                        failure.send_replace(Some(reason.clone()));
                        // Readers waiting for groups it had acknowledged must not wait forever.
                        visibility.fail(&reason);
                    }
                })
                .map_err(io_error)?
        };
        Ok(Self {
            db,
            partitions,
            secret,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            visibility,
            derived,
            stats,
            failure,
            reserve,
            queued,
            unanswered,
            max_queued_bytes: options.max_queued_bytes,
            backups: Mutex::new(()),
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        self.visibility.wait()?;
        self.read_now(f)
    }

    /// [`Self::read`] of something only the writes `touched` recognises change (one
    /// invocation's result waiters, one key's state names): it waits for the groups kept aside
    /// only if one of them made such a write.
    fn read_if<T>(
        &self,
        touched: impl Fn(&LatestWrites) -> bool,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        self.visibility.wait_if(touched)?;
        self.read_now(f)
    }

    /// A read of what redb holds now, for a key no write kept aside touched
    /// ([`Visibility::find`]).
    /// One invocation record: from the writes kept aside, else from redb, which is read only
    /// if `any_id` or the derived ids it may hold include `id`.
    fn invocation_where(
        &self,
        id: &InvocationId,
        any_id: bool,
    ) -> Result<Option<InvocationRecord>, StorageError> {
        let raw = match self.visibility.find(|kept| kept.record(id))? {
            Found::Written(raw) => raw,
            // Looked at after the writes kept aside: a record that left them is counted.
            _ if !any_id && !self.derived.may_hold(id) => None,
            _ => self.read_now(|txn| {
                let table = txn.open_table(INVOCATIONS)?;
                Ok(table
                    .get(id.storage_key().as_slice())?
                    .map(|v| v.value().to_vec()))
            })?,
        };
        raw.map(|bytes| records::decode(&bytes).map_err(Into::into))
            .transpose()
    }

    fn read_now<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        let txn = self.db.begin_read().map_err(backend)?;
        f(&txn).map_err(backend)
    }
}

fn backend(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Backend(e.into().to_string())
}

/// A stored value that a write reads and cannot decode: the store is damaged.
fn corrupted(e: records::DecodeRecordError) -> redb::Error {
    redb::Error::Corrupted(e.to_string())
}

/// The due time a stored hint records; for a format-1 hint that does not know it, its
/// record's (`record` fetches it, encoded), read only then.
fn hint_due(
    hint: &[u8],
    record: impl FnOnce() -> Result<Option<Vec<u8>>, redb::Error>,
) -> Result<Option<u64>, redb::Error> {
    if let Some(due) = UnfinishedHint::encoded_due(hint) {
        return Ok(due);
    }
    let decoded = UnfinishedHint::decode(hint).map_err(corrupted)?;
    if decoded.known_due {
        return Ok(decoded.hint.due_at_ms);
    }
    match record()? {
        Some(bytes) => {
            let record: InvocationRecord = records::decode(&bytes).map_err(corrupted)?;
            Ok(records::due_at(&record.status))
        }
        None => Ok(None),
    }
}

/// Moves `id` in the due-time index from `from` to `to` (either may be none).
fn move_due(
    table: &mut redb::Table<'_, &'static [u8], ()>,
    id: &InvocationId,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<(), redb::Error> {
    if let Some(at) = from {
        table
            .remove(expiry_key(at, id).as_slice())
            .map_err(redb::Error::from)?;
    }
    if let Some(at) = to {
        table
            .insert(expiry_key(at, id).as_slice(), ())
            .map_err(redb::Error::from)?;
    }
    Ok(())
}

fn open_error(shown: &str, file: &Path, e: DatabaseError) -> OpenError {
    let path = shown.to_owned();
    match e {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path },
        DatabaseError::UpgradeRequired(v) => OpenError::Incompatible {
            path,
            reason: format!("redb file format {v} needs an upgrade"),
        },
        DatabaseError::Storage(redb::StorageError::Io(source)) => OpenError::Io { path, source },
        DatabaseError::Storage(redb::StorageError::PreviousIo) => OpenError::Io {
            path,
            source: std::io::Error::other("an earlier write to the store failed"),
        },
        other => OpenError::Corrupt {
            path,
            reason: format!("{} ({other})", file.display()),
        },
    }
}

/// What is wrong with a data folder found while opening it; [`OpenFault::at`] names the folder.
enum OpenFault {
    /// A file cannot be read or written.
    Io(std::io::Error),
    /// Written by another format version or layout.
    Incompatible(String),
    /// Not a valid store, or its log does not apply.
    Corrupt(String),
}

impl OpenFault {
    fn corrupt(e: impl std::fmt::Display) -> Self {
        Self::Corrupt(e.to_string())
    }

    /// A redb failure: I/O when the disk failed (or is full), which is not damage, so that
    /// nobody deletes data that a retry on a healthy disk would open; else corruption.
    fn from_redb(e: impl Into<redb::Error>) -> Self {
        match e.into() {
            redb::Error::Io(e) => Self::Io(e),
            redb::Error::PreviousIo => Self::Io(std::io::Error::other(
                "an earlier write to the store failed",
            )),
            other => Self::corrupt(other),
        }
    }

    /// Says what was being done when a corruption was found.
    fn context(self, what: &str) -> Self {
        match self {
            Self::Corrupt(reason) => Self::Corrupt(format!("{what}: {reason}")),
            other => other,
        }
    }

    fn at(self, path: &str) -> OpenError {
        let path = path.to_owned();
        match self {
            Self::Io(source) => OpenError::Io { path, source },
            Self::Incompatible(reason) => OpenError::Incompatible { path, reason },
            Self::Corrupt(reason) => OpenError::Corrupt { path, reason },
        }
    }
}

/// Records the format version, partition count and secret in a new store, or checks and reads
/// them in an old one (a store from before the secret gets one).
fn init_meta(db: &Database, partitions: u32) -> Result<(u32, [u8; 32]), OpenFault> {
    let txn = db.begin_write().map_err(OpenFault::from_redb)?;
    let found = {
        let mut meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
        let read_u32 = |v: Option<redb::AccessGuard<'_, &[u8]>>| {
            v.and_then(|g| g.value().try_into().ok().map(u32::from_be_bytes))
        };
        let version = read_u32(meta.get("format_version").map_err(OpenFault::from_redb)?);
        let stored = read_u32(meta.get("partitions").map_err(OpenFault::from_redb)?);
        match (version, stored) {
            (None, None) => {
                meta.insert("format_version", FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(OpenFault::from_redb)?;
                meta.insert("partitions", partitions.to_be_bytes().as_slice())
                    .map_err(OpenFault::from_redb)?;
                for table in [INVOCATIONS, JOURNAL, STATE, PROMISES, UNFINISHED] {
                    txn.open_table(table).map_err(OpenFault::from_redb)?;
                }
                partitions
            }
            (Some(FORMAT_VERSION), Some(p)) => p,
            (Some(v), Some(p)) if FORMATS_UPGRADED_AS_THEY_ARE.contains(&v) => {
                meta.insert("format_version", FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(OpenFault::from_redb)?;
                p
            }
            (Some(FORMAT_BEFORE_DUE_INDEX), Some(p)) => {
                meta.insert("format_version", FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(OpenFault::from_redb)?;
                // Built anew whatever a marker says: a binary of the older format may have
                // written since an earlier build.
                meta.remove(DUE_INDEX).map_err(OpenFault::from_redb)?;
                p
            }
            (Some(v), _) => {
                return Err(OpenFault::Incompatible(format!(
                    "store format version {v}, this build reads version {FORMAT_VERSION}"
                )));
            }
            (None, Some(_)) => return Err(OpenFault::corrupt("missing format version")),
        }
    };
    let secret = {
        let mut meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
        let stored: Option<[u8; 32]> = meta
            .get(SECRET)
            .map_err(OpenFault::from_redb)?
            .and_then(|v| v.value().try_into().ok());
        match stored {
            Some(secret) => secret,
            None => {
                let secret: [u8; 32] = rand::random();
                meta.insert(SECRET, secret.as_slice())
                    .map_err(OpenFault::from_redb)?;
                secret
            }
        }
    };
    // Tables are created if missing (a store of this format from before a table existed).
    for table in [EXPIRY, PROMISE_WAITERS, WAKEUPS, DUE] {
        txn.open_table(table).map_err(OpenFault::from_redb)?;
    }
    txn.open_table(RESULT_WAITERS)
        .map_err(OpenFault::from_redb)?;
    txn.commit().map_err(OpenFault::from_redb)?;
    Ok((found, secret))
}

fn journal_key(id: &InvocationId, index: u32) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..24].copy_from_slice(&id.storage_key());
    key[24..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The key of `id` in a time-ordered index (expiry, due times).
fn expiry_key(at_ms: u64, id: &InvocationId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&at_ms.to_be_bytes());
    key[8..].copy_from_slice(&id.storage_key());
    key
}

/// The key prefix of one scope's state: both parts length-prefixed, so no key can be a prefix
/// of another scope's.
fn state_prefix(scope: &StateScope) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + scope.service.len() + scope.key.len());
    for part in [&scope.service, &scope.key] {
        out.extend((part.len() as u32).to_be_bytes());
        out.extend(part.as_bytes());
    }
    out
}

fn state_key(scope: &StateScope, name: &str) -> Vec<u8> {
    let mut key = state_prefix(scope);
    key.extend(name.as_bytes());
    key
}

/// The smallest key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

/// The smallest key above every key starting with `prefix`, for binary suffixes (`None`: no
/// upper bound).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Removes every key starting with `prefix` from a table whose suffixes are binary.
fn clear_binary_prefix(
    table: &mut redb::Table<'_, &'static [u8], ()>,
    prefix: &[u8],
) -> Result<(), redb::Error> {
    match prefix_successor(prefix) {
        Some(end) => table.retain_in(prefix..end.as_slice(), |_, _| false),
        None => table.retain_in(prefix.., |_, _| false),
    }
    .map_err(redb::Error::from)
}

/// The prefix of one promise's waiters: the scope, then the length-prefixed name.
fn waiters_prefix(scope: &StateScope, name: &str) -> Vec<u8> {
    let mut key = state_prefix(scope);
    key.extend((name.len() as u32).to_be_bytes());
    key.extend(name.as_bytes());
    key
}

/// Removes every entry of one scope from a state-like table.
fn clear_scope(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    scope: &StateScope,
) -> Result<(), redb::Error> {
    let prefix = state_prefix(scope);
    table
        .retain_in(prefix.as_slice()..prefix_end(&prefix).as_slice(), |_, _| {
            false
        })
        .map_err(redb::Error::from)
}

/// The log after replaying its tail into the store, and the sequence number of the last
/// record the store now holds durably.
pub(super) struct RecoveredLog {
    pub(super) log: Log,
    pub(super) applied: u64,
}

/// Opens the log and applies the records the durable store misses in one durable commit. A
/// store without a salt (new, or from before salts) gets one, durably, before the log is used.
fn recover_log(
    db: &Database,
    derived: &DerivedIds,
    files: &dyn Files,
    dir: &Path,
) -> Result<RecoveredLog, OpenFault> {
    let read_u64 = |key: &str| -> Result<Option<u64>, OpenFault> {
        let txn = db.begin_read().map_err(OpenFault::from_redb)?;
        let meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
        Ok(meta
            .get(key)
            .map_err(OpenFault::from_redb)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)))
    };
    let mut applied = read_u64(WAL_APPLIED)?.unwrap_or(0);
    let salt = read_u64(WAL_SALT)?;
    let (mut log, replayed) =
        Log::open(files, dir, applied, salt.unwrap_or(0)).map_err(|e| match e {
            WalError::Io(e) => OpenFault::Io(e),
            corrupt @ WalError::Corrupt { .. } => OpenFault::corrupt(corrupt),
        })?;
    if let Some(last) = replayed.last().map(|r| r.seq) {
        let ops = replayed.iter().flat_map(|record| &record.ops);
        commit_ops(db, derived, ops, Durability::Immediate, Some(last)).map_err(|e| {
            OpenFault::from_redb(e).context(&format!("replaying log records up to {last}"))
        })?;
        applied = last;
        log.restart().map_err(OpenFault::Io)?;
    }
    if salt.is_none() {
        let salt = std::iter::repeat_with(rand::random::<u64>)
            .find(|s| *s != 0)
            .expect("a nonzero draw");
        let txn = db.begin_write().map_err(OpenFault::from_redb)?;
        {
            let mut meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
            meta.insert(WAL_SALT, salt.to_be_bytes().as_slice())
                .map_err(OpenFault::from_redb)?;
        }
        txn.commit().map_err(OpenFault::from_redb)?;
        // Whatever the log held is applied or not this store's: new records start over.
        log.set_salt(salt);
        log.restart().map_err(OpenFault::Io)?;
    }
    Ok(RecoveredLog { log, applied })
}

/// Builds the due-time index of a store from before it (once, after the log is replayed):
/// every unfinished invocation with a timer gets its entry, and its hint the due time.
fn build_due_index(db: &Database) -> Result<(), OpenFault> {
    let built = {
        let txn = db.begin_read().map_err(OpenFault::from_redb)?;
        let meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
        meta.get(DUE_INDEX).map_err(OpenFault::from_redb)?.is_some()
    };
    if built {
        return Ok(());
    }
    let txn = db.begin_write().map_err(OpenFault::from_redb)?;
    {
        let mut unfinished = txn.open_table(UNFINISHED).map_err(OpenFault::from_redb)?;
        let invocations = txn.open_table(INVOCATIONS).map_err(OpenFault::from_redb)?;
        let mut due = txn.open_table(DUE).map_err(OpenFault::from_redb)?;
        let stored: Vec<(Vec<u8>, Vec<u8>)> = unfinished
            .iter()
            .map_err(OpenFault::from_redb)?
            .map(|item| item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
            .collect::<Result<_, _>>()
            .map_err(OpenFault::from_redb)?;
        for (key, bytes) in stored {
            let id = InvocationId::from_storage_key(&key)
                .ok_or_else(|| OpenFault::corrupt("unfinished invocation key"))?;
            let mut hint = UnfinishedHint::decode(&bytes)
                .map_err(|e| OpenFault::corrupt(format!("recovery hint: {e}")))?
                .hint;
            let record = invocations
                .get(key.as_slice())
                .map_err(OpenFault::from_redb)?
                .map(|g| records::decode::<InvocationRecord>(g.value()))
                .transpose()
                .map_err(|e| OpenFault::corrupt(format!("invocation record: {e}")))?;
            hint.due_at_ms = record.and_then(|r| records::due_at(&r.status));
            if let Some(at) = hint.due_at_ms {
                due.insert(expiry_key(at, &id).as_slice(), ())
                    .map_err(OpenFault::from_redb)?;
            }
            unfinished
                .insert(key.as_slice(), hint.encode().as_slice())
                .map_err(OpenFault::from_redb)?;
        }
        let mut meta = txn.open_table(META).map_err(OpenFault::from_redb)?;
        meta.insert(DUE_INDEX, [1u8].as_slice())
            .map_err(OpenFault::from_redb)?;
    }
    txn.commit().map_err(OpenFault::from_redb)?;
    Ok(())
}

/// Whether an encoded record's id is derived from its key (undecodable: counted as one).
fn derived_record(id: &InvocationId, encoded: &[u8]) -> bool {
    records::decode_head(encoded).map_or(true, |head| {
        let (target, idempotent) = (head.target, head.idempotency_key.is_some());
        derived_ids::is_derived(id, idempotent, target.service, target.key)
    })
}

/// The derived ids of the records redb holds, counted by one scan (none past
/// [`derived_ids::SCAN_LIMIT`] records: every id may then be stored).
fn count_derived(db: &Database) -> Result<DerivedIds, OpenFault> {
    let txn = db.begin_read().map_err(OpenFault::from_redb)?;
    let table = txn.open_table(INVOCATIONS).map_err(OpenFault::from_redb)?;
    if table.len().map_err(OpenFault::from_redb)? > derived_ids::SCAN_LIMIT {
        return Ok(DerivedIds::unknown());
    }
    let derived = DerivedIds::new();
    for row in table.iter().map_err(OpenFault::from_redb)? {
        let (key, record) = row.map_err(OpenFault::from_redb)?;
        let id = InvocationId::from_storage_key(key.value())
            .ok_or_else(|| OpenFault::corrupt("an invocation key is not 24 bytes"))?;
        if derived_record(&id, record.value()) {
            derived.add(&id);
        }
    }
    Ok(derived)
}

/// The tables one transaction writes, each opened on first use: opening a table costs a lookup
/// and marks the table tree dirty, and most commits touch two or three of the seven.
struct OpenTables<'t> {
    txn: &'t redb::WriteTransaction,
    derived: &'t DerivedIds,
    /// Derived ids whose record the transaction removes: uncounted once it commits.
    removed: Vec<InvocationId>,
    invocations: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    journal: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    unfinished: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    expiry: Option<redb::Table<'t, &'static [u8], ()>>,
    due: Option<redb::Table<'t, &'static [u8], ()>>,
    state: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    promises: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    waiters: Option<redb::Table<'t, &'static [u8], ()>>,
    wakeups: Option<redb::Table<'t, &'static [u8], ()>>,
    result_waiters: Option<redb::Table<'t, &'static [u8], u8>>,
}

/// The table in `slot`, opening it first if needed.
fn opened<'s, 't, V: redb::Value + 'static>(
    txn: &'t redb::WriteTransaction,
    slot: &'s mut Option<redb::Table<'t, &'static [u8], V>>,
    definition: TableDefinition<&'static [u8], V>,
) -> Result<&'s mut redb::Table<'t, &'static [u8], V>, redb::Error> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition).map_err(redb::Error::from)?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

impl<'t> OpenTables<'t> {
    fn new(txn: &'t redb::WriteTransaction, derived: &'t DerivedIds) -> Self {
        Self {
            txn,
            derived,
            removed: Vec::new(),
            invocations: None,
            journal: None,
            unfinished: None,
            expiry: None,
            due: None,
            state: None,
            promises: None,
            waiters: None,
            wakeups: None,
            result_waiters: None,
        }
    }
}

/// `table!(t.name, DEFINITION)`: that table of `t`, opened on first use.
macro_rules! table {
    ($tables:ident . $name:ident, $definition:expr) => {
        opened($tables.txn, &mut $tables.$name, $definition)?
    };
}

/// One redb transaction applying `ops` in order; a durable one also records `applied`, the last
/// log record it covers.
pub(super) fn commit_ops<'a>(
    db: &Database,
    derived: &DerivedIds,
    ops: impl Iterator<Item = &'a WriteOp>,
    durability: Durability,
    applied: Option<u64>,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write().map_err(redb::Error::from)?;
    // A durable commit saves redb's allocator state, so reopening after a crash loads it
    // instead of walking every tree. It costs a second fsync, on the checkpointer's thread.
    txn.set_quick_repair(matches!(durability, Durability::Immediate));
    txn.set_durability(durability)?;
    let ops: Vec<&WriteOp> = ops.collect();
    let hidden = hidden_writes(&ops);
    let removed = {
        let mut t = OpenTables::new(&txn, derived);
        for (i, op) in ops.into_iter().enumerate() {
            if !hidden[i] {
                apply_op(&mut t, op)?;
            }
        }
        t.removed
    };
    if let Some(seq) = applied {
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        meta.insert(WAL_APPLIED, seq.to_be_bytes().as_slice())
            .map_err(redb::Error::from)?;
    }
    txn.commit().map_err(redb::Error::from)?;
    removed.iter().for_each(|id| derived.remove(id));
    Ok(())
}

/// The positions of writes that a later write of the same transaction hides, so that they are
/// not applied at all: an unfinished invocation's record put again later (an invocation that
/// started and ended, or ran and suspended, within the groups of one transaction: its record,
/// recovery hint and due time written once, not twice), and a state value set again later (a
/// hot key's counter). The transaction's outcome is the same; nobody reads between its writes.
/// A finished record is always applied (it clears wake-ups, which a later unfinished put would
/// not), and none is hidden across a write that reads it (a cancel request) or removes it.
/// The later put moves the due-time index from the hint it replaces straight to its own: the
/// same as through the hidden one's while the index agrees with the hints, which every write
/// keeps (a store from before the index gets it built at open, after its log is replayed).
fn hidden_writes(ops: &[&WriteOp]) -> Vec<bool> {
    let mut hidden = vec![false; ops.len()];
    // Per invocation: whether a later put (none past a cancel or a removal) replaces what an
    // unfinished put indexed: its recovery hint and due time.
    // Sized once: most transactions put a record per request and set no state.
    let count = |f: fn(&WriteOp) -> bool| ops.iter().filter(|op| f(op)).count();
    let mut replaced_later: FastMap<&InvocationId, bool> = FastMap::with_capacity_and_hasher(
        count(|op| matches!(op, WriteOp::PutInvocation { .. })),
        Default::default(),
    );
    let mut set_later: FastSet<(&StateScope, &str)> = FastSet::with_capacity_and_hasher(
        count(|op| matches!(op, WriteOp::SetState { .. })),
        Default::default(),
    );
    for (i, op) in ops.iter().enumerate().rev() {
        match op {
            WriteOp::PutInvocation {
                id,
                expires_at_ms,
                unfinished,
                stored_before,
                ..
            } => {
                let replaced = replaced_later.entry(id).or_default();
                hidden[i] = *replaced && expires_at_ms.is_none();
                // An unfinished put replaces the hint; a finished one removes it, unless it is
                // the record's first put (then it looks for none).
                *replaced |= unfinished.is_some() || *stored_before;
            }
            WriteOp::RequestCancel { id } | WriteOp::DeleteInvocation { id } => {
                replaced_later.remove(id);
            }
            WriteOp::SetState { scope, name, .. } => {
                hidden[i] = !set_later.insert((scope, name.as_str()));
            }
            _ => {}
        }
    }
    hidden
}

fn apply_op(t: &mut OpenTables<'_>, op: &WriteOp) -> Result<(), redb::Error> {
    match op {
        WriteOp::PutInvocation {
            id,
            encoded,
            expires_at_ms,
            unfinished: hint,
            stored_before,
        } => {
            let key = id.storage_key();
            let due = match hint {
                Some(hint) => hint_due(hint, || Ok(Some(encoded.clone())))?,
                None => None,
            };
            // The hint this one replaces, for its due time (read before the record is).
            let old_hint = if hint.is_some() || (*stored_before && expires_at_ms.is_some()) {
                let unfinished = table!(t.unfinished, UNFINISHED);
                let old = match hint {
                    Some(hint) => unfinished.insert(key.as_slice(), hint.as_slice()),
                    None => unfinished.remove(key.as_slice()),
                };
                // Its due time read from its header; a format-1 hint is copied to be decoded.
                old.map_err(redb::Error::from)?.map(|g| {
                    UnfinishedHint::encoded_due(g.value()).ok_or_else(|| g.value().to_vec())
                })
            } else {
                None
            };
            let old_due = match old_hint {
                Some(Ok(due)) => due,
                Some(Err(old)) => {
                    let invocations = table!(t.invocations, INVOCATIONS);
                    hint_due(&old, || {
                        Ok(invocations
                            .get(key.as_slice())
                            .map_err(redb::Error::from)?
                            .map(|g| g.value().to_vec()))
                    })?
                }
                None => None,
            };
            let new = table!(t.invocations, INVOCATIONS)
                .insert(key.as_slice(), encoded.as_slice())
                .map_err(redb::Error::from)?
                .is_none();
            if new && derived_record(id, encoded) {
                t.derived.add(id);
            }
            if let Some(at) = expires_at_ms {
                if *stored_before {
                    clear_wakeups(table!(t.wakeups, WAKEUPS), id)?;
                }
                table!(t.expiry, EXPIRY)
                    .insert(expiry_key(*at, id).as_slice(), ())
                    .map_err(redb::Error::from)?;
            }
            if old_due != due {
                move_due(table!(t.due, DUE), id, old_due, due)?;
            }
        }
        WriteOp::PutJournal { id, index, encoded } => {
            table!(t.journal, JOURNAL)
                .insert(journal_key(id, *index).as_slice(), encoded.as_slice())
                .map_err(redb::Error::from)?;
        }
        WriteOp::SetState { scope, name, value } => {
            table!(t.state, STATE)
                .insert(state_key(scope, name).as_slice(), value.as_slice())
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearState { scope, name } => {
            table!(t.state, STATE)
                .remove(state_key(scope, name).as_slice())
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearAllState { scope } => clear_scope(table!(t.state, STATE), scope)?,
        WriteOp::PutPromise {
            scope,
            name,
            encoded,
        } => {
            table!(t.promises, PROMISES)
                .insert(state_key(scope, name).as_slice(), encoded.as_slice())
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearPromises { scope } => {
            clear_scope(table!(t.promises, PROMISES), scope)?;
            clear_binary_prefix(table!(t.waiters, PROMISE_WAITERS), &state_prefix(scope))?;
        }
        WriteOp::AddPromiseWaiter {
            scope,
            name,
            id,
            index,
        } => {
            let mut key = waiters_prefix(scope, name);
            key.extend(id.storage_key());
            key.extend(index.to_be_bytes());
            table!(t.waiters, PROMISE_WAITERS)
                .insert(key.as_slice(), ())
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearPromiseWaiters { scope, name } => {
            clear_binary_prefix(
                table!(t.waiters, PROMISE_WAITERS),
                &waiters_prefix(scope, name),
            )?;
        }
        WriteOp::Wake { id, index } => {
            table!(t.wakeups, WAKEUPS)
                .insert(journal_key(id, *index).as_slice(), ())
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearWakes { id, indexes } => {
            let table = table!(t.wakeups, WAKEUPS);
            for index in indexes {
                table
                    .remove(journal_key(id, *index).as_slice())
                    .map_err(redb::Error::from)?;
            }
        }
        WriteOp::AddResultWaiter {
            source,
            waiter,
            index,
            call,
        } => {
            let mut key = source.storage_key().to_vec();
            key.extend(journal_key(waiter, *index));
            table!(t.result_waiters, RESULT_WAITERS)
                .insert(key.as_slice(), u8::from(*call))
                .map_err(redb::Error::from)?;
        }
        WriteOp::ClearResultWaiters { source } => {
            let (lo, hi) = (source.storage_key(), [0xffu8; 52]);
            let mut hi = hi;
            hi[..24].copy_from_slice(&lo);
            table!(t.result_waiters, RESULT_WAITERS)
                .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
                .map_err(redb::Error::from)?;
        }
        WriteOp::RequestCancel { id } => {
            let key = id.storage_key();
            let table = table!(t.invocations, INVOCATIONS);
            let stored = table
                .get(key.as_slice())
                .map_err(redb::Error::from)?
                .map(|bytes| bytes.value().to_vec());
            let record = match stored {
                Some(bytes) => {
                    Some(records::decode::<InvocationRecord>(&bytes).map_err(corrupted)?)
                }
                None => None,
            };
            if let Some(mut record) = record
                && !matches!(record.status, records::Status::Completed { .. })
            {
                record.cancel_requested = true;
                table
                    .insert(key.as_slice(), records::encode(&record).as_slice())
                    .map_err(redb::Error::from)?;
            }
        }
        // One process runs every partition: nothing is forwarded, nothing arrives.
        WriteOp::InboxDone { .. } => {}
        WriteOp::Forward { .. } => {
            debug_assert!(false, "a message forwarded on a store of one process");
        }
        WriteOp::DeleteInvocation { id } => {
            let key = id.storage_key();
            if let Some(old) = table!(t.invocations, INVOCATIONS)
                .remove(key.as_slice())
                .map_err(redb::Error::from)?
            {
                let record: InvocationRecord = records::decode(old.value()).map_err(corrupted)?;
                let (target, idempotent) = (&record.target, record.idempotency_key.is_some());
                if derived_ids::is_derived(id, idempotent, &target.service, target.key.as_deref()) {
                    t.removed.push(*id);
                }
                if let records::Status::Completed { expires_at_ms, .. } = record.status {
                    table!(t.expiry, EXPIRY)
                        .remove(expiry_key(expires_at_ms, id).as_slice())
                        .map_err(redb::Error::from)?;
                }
                let due = records::due_at(&record.status);
                move_due(table!(t.due, DUE), id, due, None)?;
            }
            table!(t.unfinished, UNFINISHED)
                .remove(key.as_slice())
                .map_err(redb::Error::from)?;
            clear_wakeups(table!(t.wakeups, WAKEUPS), id)?;
            let (lo, hi) = (journal_key(id, 0), journal_key(id, u32::MAX));
            table!(t.journal, JOURNAL)
                .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
                .map_err(redb::Error::from)?;
        }
    }
    Ok(())
}

/// Removes every wake-up of a finished invocation.
fn clear_wakeups(
    table: &mut redb::Table<'_, &'static [u8], ()>,
    id: &InvocationId,
) -> Result<(), redb::Error> {
    let (lo, hi) = (journal_key(id, 0), journal_key(id, u32::MAX));
    table
        .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
        .map_err(redb::Error::from)
}

/// Decodes (invocation key, record) rows read from the invocations table.
fn decode_rows(
    raw: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError> {
    raw.into_iter()
        .map(|(k, v)| {
            let id = InvocationId::from_storage_key(&k)
                .ok_or_else(|| StorageError::Decode("invocation key".into()))?;
            Ok((id, records::decode(&v)?))
        })
        .collect()
}

impl Storage for RedbStorage {
    fn submit(&self, ops: Vec<WriteOp>) -> CommitWaiter {
        let (done, rx) = oneshot::channel();
        let queue = self.queue.lock().expect("queue lock");
        match queue.as_ref() {
            Some(tx) => {
                let bytes = ops.iter().map(WriteOp::size).sum();
                self.queued.fetch_add(bytes, Ordering::Relaxed);
                self.unanswered.fetch_add(1, Ordering::SeqCst);
                if let Err(mpsc::SendError(req)) = tx.send(Request { ops, bytes, done }) {
                    self.queued.fetch_sub(bytes, Ordering::Relaxed);
                    self.unanswered.fetch_sub(1, Ordering::SeqCst);
                    let _ = req.done.send(Err(StorageError::Closed));
                }
            }
            None => {
                let _ = done.send(Err(StorageError::Closed));
            }
        }
        CommitWaiter::new(rx)
    }

    fn invocation(&self, id: &InvocationId) -> Result<Option<InvocationRecord>, StorageError> {
        self.invocation_where(id, true)
    }

    fn derived_invocation_async(&self, id: &InvocationId) -> super::RecordWaiter {
        // Answered at once, as every read of this store is (the trait's default).
        let stored = self.invocation_where(id, false);
        Box::pin(std::future::ready(stored))
    }

    fn journal(&self, id: &InvocationId) -> Result<Vec<(u32, JournalEntry)>, StorageError> {
        // Never waits for the groups kept aside (a resume reads the journal a completion just
        // wrote, under the in-flight lock): their writes are laid over redb's entries.
        let (kept, txn) = self.visibility.snapshot(
            |kept| kept.journal(id),
            || self.db.begin_read().map_err(backend),
        )?;
        let stored = |txn: &redb::ReadTransaction| -> Result<_, redb::Error> {
            let table = txn.open_table(JOURNAL)?;
            let (lo, hi) = (journal_key(id, 0), journal_key(id, u32::MAX));
            let mut out = BTreeMap::new();
            for item in table.range(lo.as_slice()..=hi.as_slice())? {
                let (k, v) = item?;
                let index = u32::from_be_bytes(k.value()[24..28].try_into().expect("28-byte key"));
                out.insert(index, v.value().to_vec());
            }
            Ok(out)
        };
        let raw = match kept {
            Some(kept) if kept.cleared => kept.over(BTreeMap::new()),
            Some(kept) => kept.over(stored(&txn).map_err(backend)?),
            None => stored(&txn).map_err(backend)?,
        };
        raw.into_iter()
            .map(|(i, bytes)| Ok((i, records::decode(&bytes)?)))
            .collect()
    }

    fn state(&self, scope: &StateScope, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        if let Found::Written(value) = self.visibility.find(|kept| kept.state(scope, name))? {
            return Ok(value);
        }
        self.read_now(|txn| {
            let table = txn.open_table(STATE)?;
            Ok(table
                .get(state_key(scope, name).as_slice())?
                .map(|v| v.value().to_vec()))
        })
    }

    fn state_keys(&self, scope: &StateScope) -> Result<Vec<String>, StorageError> {
        self.read_if(
            |kept| kept.touches_scope(scope),
            |txn| {
                let table = txn.open_table(STATE)?;
                let prefix = state_prefix(scope);
                let mut out = Vec::new();
                for item in table.range(prefix.as_slice()..prefix_end(&prefix).as_slice())? {
                    let (k, _) = item?;
                    out.push(String::from_utf8_lossy(&k.value()[prefix.len()..]).into_owned());
                }
                Ok(out)
            },
        )
    }

    fn promise(&self, scope: &StateScope, name: &str) -> Result<Option<Outcome>, StorageError> {
        let raw = self.read_if(
            |kept| kept.touches_scope(scope),
            |txn| {
                let table = txn.open_table(PROMISES)?;
                Ok(table
                    .get(state_key(scope, name).as_slice())?
                    .map(|v| v.value().to_vec()))
            },
        )?;
        raw.map(|bytes| records::decode(&bytes).map_err(Into::into))
            .transpose()
    }

    fn invocations(
        &self,
        after: Option<InvocationId>,
        limit: usize,
    ) -> Result<Vec<(InvocationId, InvocationRecord)>, StorageError> {
        let raw = self.read(|txn| {
            let table = txn.open_table(INVOCATIONS)?;
            let start = after.map(|id| id.storage_key());
            let range = match &start {
                Some(key) => table.range::<&[u8]>((
                    std::ops::Bound::Excluded(key.as_slice()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => table.range::<&[u8]>(..)?,
            };
            let mut out = Vec::new();
            for item in range.take(limit) {
                let (k, v) = item?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        decode_rows(raw)
    }

    fn promise_waiters(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Vec<(InvocationId, u32)>, StorageError> {
        self.read_if(
            |kept| kept.touches_scope(scope),
            |txn| {
                let table = txn.open_table(PROMISE_WAITERS)?;
                let prefix = waiters_prefix(scope, name);
                let mut out = Vec::new();
                let range = match prefix_successor(&prefix) {
                    Some(end) => table.range(prefix.as_slice()..end.as_slice())?,
                    None => table.range(prefix.as_slice()..)?,
                };
                for item in range {
                    let (k, _) = item?;
                    let rest = &k.value()[prefix.len()..];
                    if let (Some(id), Some(index)) = (
                        InvocationId::from_storage_key(&rest[..24.min(rest.len())]),
                        rest.get(24..28)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes),
                    ) {
                        out.push((id, index));
                    }
                }
                Ok(out)
            },
        )
    }

    fn unfinished(&self) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.unfinished_where(&mut |_, _| true)
    }

    fn unfinished_where(
        &self,
        keep: &mut dyn FnMut(InvocationId, Option<HintHead>) -> bool,
    ) -> Result<Vec<(InvocationId, UnfinishedHint)>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(UNFINISHED)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                let id = InvocationId::from_storage_key(k.value())
                    .ok_or_else(|| redb::Error::Corrupted("unfinished: invocation key".into()))?;
                let bytes = v.value();
                if keep(id, UnfinishedHint::encoded_head(bytes)) {
                    out.push((id, UnfinishedHint::decode(bytes).map_err(corrupted)?.hint));
                }
            }
            Ok(out)
        })
    }

    fn due(
        &self,
        after: Option<(u64, InvocationId)>,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InvocationId)>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(DUE)?;
            let hi = expiry_key(
                until_ms,
                &InvocationId::from_storage_key(&[0xff; 24]).expect("24 bytes"),
            );
            let range = match after {
                Some((at, id)) => {
                    let lo = expiry_key(at, &id);
                    table.range::<&[u8]>((
                        std::ops::Bound::Excluded(lo.as_slice()),
                        std::ops::Bound::Included(hi.as_slice()),
                    ))?
                }
                None => table.range(..=hi.as_slice())?,
            };
            let mut out = Vec::new();
            for item in range.take(limit) {
                let (k, _) = item?;
                let key = k.value();
                let id = (key.len() == 32)
                    .then(|| InvocationId::from_storage_key(&key[8..]))
                    .flatten()
                    .ok_or_else(|| redb::Error::Corrupted("due index key".into()))?;
                let at = u64::from_be_bytes(key[..8].try_into().expect("32 bytes"));
                out.push((at, id));
            }
            Ok(out)
        })
    }

    fn due_len(&self) -> Result<u64, StorageError> {
        use redb::ReadableTableMetadata as _;
        self.read(|txn| Ok(txn.open_table(DUE)?.len()?))
    }

    fn result_waiters(
        &self,
        source: Option<&InvocationId>,
    ) -> Result<Vec<super::ResultWaiter>, StorageError> {
        let touched = |kept: &LatestWrites| source.is_none_or(|id| kept.touches_result_waiters(id));
        self.read_if(touched, |txn| {
            let table = txn.open_table(RESULT_WAITERS)?;
            let range = match source {
                Some(id) => {
                    let lo = id.storage_key();
                    let mut hi = [0xffu8; 52];
                    hi[..24].copy_from_slice(&lo);
                    table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?
                }
                None => table.range::<&[u8]>(..)?,
            };
            let mut out = Vec::new();
            for item in range {
                let (k, v) = item?;
                let key = k.value();
                let ids = (
                    InvocationId::from_storage_key(&key[..24]),
                    InvocationId::from_storage_key(&key[24..48]),
                );
                if let ((Some(source), Some(waiter)), Some(index)) = (
                    ids,
                    key.get(48..52)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_be_bytes),
                ) {
                    out.push(super::ResultWaiter {
                        source,
                        waiter,
                        index,
                        call: v.value() == 1,
                    });
                }
            }
            Ok(out)
        })
    }

    fn woken(&self) -> Result<Vec<InvocationId>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(WAKEUPS)?;
            let mut out: Vec<InvocationId> = Vec::new();
            for item in table.iter()? {
                let (k, _) = item?;
                if let Some(id) = InvocationId::from_storage_key(&k.value()[..24])
                    && out.last() != Some(&id)
                {
                    out.push(id);
                }
            }
            Ok(out)
        })
    }

    fn expired(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(InvocationId, Option<records::Target>)>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(EXPIRY)?;
            let invocations = txn.open_table(INVOCATIONS)?;
            let hi = expiry_key(
                now_ms,
                &InvocationId::from_storage_key(&[0xff; 24]).expect("24 bytes"),
            );
            let mut out = Vec::new();
            for item in table.range(..=hi.as_slice())?.take(limit) {
                let (k, _) = item?;
                let Some(id) = InvocationId::from_storage_key(&k.value()[8..]) else {
                    continue;
                };
                let target = match invocations.get(id.storage_key().as_slice())? {
                    Some(record) => {
                        Some(records::decode_target(record.value()).map_err(corrupted)?)
                    }
                    None => None,
                };
                out.push((id, target));
            }
            Ok(out)
        })
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn writer_stats(&self) -> WriterStats {
        WriterStats {
            queued_bytes: self.queued.load(Ordering::Relaxed) as u64,
            ..*self.stats.lock().expect("stats lock")
        }
    }

    fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::SeqCst)
    }

    fn admit_new_work(&self) -> Result<(), StorageError> {
        self.reserve.admit()
    }

    fn writer_busy(&self) -> Result<(), super::WriterBusy> {
        super::check_writer_queue(self.queued.load(Ordering::Relaxed), self.max_queued_bytes)
    }

    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.subscribe()
    }

    fn backup(&self, dir: &Path) -> Result<BackupReport, BackupError> {
        // One at a time: two into one folder would both find it empty.
        let _one = self.backups.lock().expect("backups lock");
        super::backup::prepare_folder(dir, self.reserve.dir())?;
        // About the store file's size (a copy is at most as large: it leaves free pages out).
        let size = std::fs::metadata(self.reserve.dir().join(FILE_NAME)).map_or(0, |m| m.len());
        self.reserve
            .room_for_copy(dir, size)
            .map_err(|reason| BackupError::Failed {
                path: dir.display().to_string(),
                reason,
            })?;
        let partial = dir.join(PARTIAL_NAME);
        let file = dir.join(FILE_NAME);
        let copied = self
            .visibility
            .wait()
            .map_err(|e| e.to_string())
            .and_then(|()| self.db.begin_read().map_err(|e| e.to_string()))
            .and_then(|snapshot| copy_store(&snapshot, &partial).map_err(|e| e.to_string()))
            .and_then(|invocations| {
                let bytes = std::fs::metadata(&partial)
                    .map_err(|e| e.to_string())?
                    .len();
                crate::failpoints::hit("backup.copied");
                // The copy is durable (its last commit): only now does the folder hold a store.
                std::fs::rename(&partial, &file).map_err(|e| e.to_string())?;
                OsFiles.sync_parent(&file).map_err(|e| e.to_string())?;
                Ok(BackupReport {
                    path: dir.to_owned(),
                    invocations,
                    bytes,
                })
            });
        copied.map_err(|reason| {
            // Nothing half-written stays behind: the folder is empty again for a retry.
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(&file);
            BackupError::Failed {
                path: dir.display().to_string(),
                reason,
            }
        })
    }

    fn close(&self) {
        self.queue.lock().expect("queue lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        self.close();
    }
}

/// Entries copied per transaction of a backup, so that its memory stays bounded.
const BACKUP_CHUNK: usize = 10_000;

/// Copies every table of `snapshot` (one read transaction: the store at one commit) into a new
/// store file at `file`, durably; returns the number of invocations. The copy has no log and a
/// new log identity: opened, it starts with what the snapshot holds.
fn copy_store(snapshot: &redb::ReadTransaction, file: &Path) -> Result<u64, redb::Error> {
    use redb::TableHandle;
    let known = [
        META.name(),
        INVOCATIONS.name(),
        JOURNAL.name(),
        UNFINISHED.name(),
        EXPIRY.name(),
        DUE.name(),
        STATE.name(),
        PROMISES.name(),
        PROMISE_WAITERS.name(),
        WAKEUPS.name(),
        RESULT_WAITERS.name(),
    ];
    // A table added later and not listed here would be left out: refuse instead.
    for table in snapshot.list_tables()? {
        if !known.contains(&table.name()) {
            return Err(redb::Error::Corrupted(format!(
                "table `{}` is not known to the backup",
                table.name()
            )));
        }
    }
    let dest = Database::create(file)?;
    copy_table(snapshot, &dest, META)?;
    copy_table(snapshot, &dest, INVOCATIONS)?;
    copy_table(snapshot, &dest, JOURNAL)?;
    copy_table(snapshot, &dest, UNFINISHED)?;
    copy_table(snapshot, &dest, EXPIRY)?;
    copy_table(snapshot, &dest, DUE)?;
    copy_table(snapshot, &dest, STATE)?;
    copy_table(snapshot, &dest, PROMISES)?;
    copy_table(snapshot, &dest, PROMISE_WAITERS)?;
    copy_table(snapshot, &dest, WAKEUPS)?;
    copy_table(snapshot, &dest, RESULT_WAITERS)?;
    let mut txn = dest.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        // The log's identity is the source's: a copy draws its own when it is opened.
        meta.remove(WAL_SALT)?;
    }
    txn.commit()?;
    let read = dest.begin_read()?;
    let invocations = match read.open_table(INVOCATIONS) {
        Ok(table) => table.len()?,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(invocations)
}

/// Copies one table, if `snapshot` has it, in transactions of [`BACKUP_CHUNK`] entries.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &redb::ReadTransaction,
    dest: &Database,
    definition: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let source = match snapshot.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut entries = source.iter()?.peekable();
    loop {
        let mut txn = dest.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(definition)?;
            for entry in entries.by_ref().take(BACKUP_CHUNK) {
                let (key, value) = entry?;
                table.insert(key.value(), value.value())?;
            }
        }
        txn.commit()?;
        if entries.peek().is_none() {
            return Ok(());
        }
    }
}

/// Whether `dir` holds a redb store, or the start of one a backup left (which its open
/// refuses, saying so).
pub(crate) fn holds_store(dir: &Path) -> bool {
    dir.join(FILE_NAME).is_file() || dir.join(PARTIAL_NAME).is_file()
}

#[cfg(test)]
/// Where the store file of a data folder lives.
pub(crate) fn store_file(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

#[cfg(test)]
/// Where the write-ahead log of a data folder lives.
pub(super) fn log_file(dir: &Path) -> PathBuf {
    dir.join(SEGMENT_NAMES[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::{Outcome, Status, Target};
    use crate::storage::wal::INITIAL_CAPACITY;

    fn record(status: Status) -> InvocationRecord {
        InvocationRecord {
            input: b"1".to_vec(),
            ..InvocationRecord::for_test("S", None, status)
        }
    }

    /// A workflow run's record is found by its derived id after a clean reopen (counted by the
    /// open's scan) and after a crash (counted as its log record is applied again), and not
    /// once it is deleted; an object's invocation of the same key is no derived id.
    #[tokio::test]
    async fn a_workflow_runs_record_is_found_by_its_derived_id_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let run = InvocationId::workflow("Wf", "order-1");
        let other = InvocationId::workflow("Wf", "order-2");
        let run_record = InvocationRecord::for_test("Wf", Some("order-1"), Status::Runnable);
        let other_record = InvocationRecord::for_test("Wf", Some("order-2"), Status::Runnable);
        let derived = |store: &RedbStorage, id| {
            futures::FutureExt::now_or_never(store.derived_invocation_async(&id))
                .expect("answered at once")
                .unwrap()
        };
        {
            let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
            let put = WriteOp::put_invocation(run, &run_record);
            store.submit(vec![put]).await.unwrap();
            assert_eq!(derived(&store, run), Some(run_record.clone()));
            assert_eq!(derived(&store, other), None);
            // The filter counts a record as its group is applied, which may come after the
            // answer: a read that needs redb current waits for that.
            store.invocations(None, 1).unwrap();
            assert!(store.derived.may_hold(&run));
            assert!(!store.derived.may_hold(&other));
        }
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        assert_eq!(derived(&store, run), Some(run_record.clone()));
        // Not the workflow's own id: an object's invocation keyed alike is not counted.
        let object_call = InvocationId::random(run.partition_key());
        let put = WriteOp::put_invocation(
            object_call,
            &InvocationRecord::for_test("Wf", Some("order-1"), Status::Runnable),
        );
        store.submit(vec![put]).await.unwrap();
        store.close();
        drop(store);
        let crashed = {
            let store = store_without_checkpoints(dir.path());
            let put = WriteOp::put_invocation(other, &other_record);
            store.submit(vec![put]).await.unwrap();
            crash_copy(dir.path())
        };
        let store = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        assert!(store.derived.may_hold(&other), "replayed from the log");
        assert!(store.derived.may_hold(&run));
        assert!(!store.derived.may_hold(&object_call));
        // Deleted (its retention ended) and created again by a new request in one transaction:
        // still counted.
        store
            .submit(vec![
                WriteOp::DeleteInvocation { id: other },
                WriteOp::put_invocation(other, &other_record),
            ])
            .await
            .unwrap();
        store.close();
        assert!(store.derived.may_hold(&other), "deleted and stored again");
        drop(store);
        let store = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        store
            .submit(vec![WriteOp::DeleteInvocation { id: run }])
            .await
            .unwrap();
        assert_eq!(derived(&store, run), None);
        assert_eq!(store.invocation(&run).unwrap(), None);
    }

    #[tokio::test]
    async fn writes_are_durable_across_reopen_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let id = InvocationId::random(7);
        let done = InvocationId::random(8);
        {
            let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
            let entry = JournalEntry::Run {
                name: "a".into(),
                outcome: Outcome::Success(b"1".to_vec()),
            };
            let waits: Vec<_> = (0..50)
                .map(|i| store.submit(vec![WriteOp::put_journal(id, i, &entry)]))
                .collect();
            store
                .submit(vec![WriteOp::put_invocation(id, &record(Status::Runnable))])
                .await
                .unwrap();
            for w in waits {
                w.await.unwrap();
            }
            let completed = Status::Completed {
                outcome: Outcome::Success(vec![]),
                completed_at_ms: 5,
                expires_at_ms: 10,
            };
            store
                .submit(vec![WriteOp::put_invocation(done, &record(completed))])
                .await
                .unwrap();
            let stats = store.writer_stats();
            assert!(stats.batches >= 52 && stats.commits <= stats.batches);
        }
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        assert_eq!(store.journal(&id).unwrap().len(), 50);
        let unfinished = store.unfinished().unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].0, id);
        assert!(store.expired(9, 10).unwrap().is_empty());
        assert_eq!(
            store.expired(10, 10).unwrap(),
            vec![(done, Some(record(Status::Runnable).target))]
        );
        store
            .submit(vec![
                WriteOp::DeleteInvocation { id: done },
                WriteOp::DeleteInvocation { id },
            ])
            .await
            .unwrap();
        assert!(store.expired(u64::MAX, 10).unwrap().is_empty());
        assert!(store.journal(&id).unwrap().is_empty());
        assert!(store.invocation(&done).unwrap().is_none());
    }

    #[tokio::test]
    async fn the_due_index_follows_each_invocations_timer() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        let (a, b, c) = (
            InvocationId::random(1),
            InvocationId::random(2),
            InvocationId::random(3),
        );
        let put = |id, status| WriteOp::put_invocation(id, &record(status));
        let new = |id, status| WriteOp::put_new_invocation(id, &record(status));
        store
            .submit(vec![
                new(a, Status::Scheduled { at_ms: 300 }),
                new(b, Status::Runnable),
                new(c, Status::Scheduled { at_ms: 100 }),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.due(None, u64::MAX, 10).unwrap(),
            vec![(100, c), (300, a)]
        );
        // Fired and running, then suspended with a later wake-up; b suspends too.
        store
            .submit(vec![
                put(a, Status::Runnable),
                put(
                    b,
                    Status::Suspended {
                        wake_at_ms: Some(200),
                    },
                ),
                put(
                    a,
                    Status::Suspended {
                        wake_at_ms: Some(400),
                    },
                ),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.due(None, u64::MAX, 10).unwrap(),
            vec![(100, c), (200, b), (400, a)]
        );
        // Windows and paging: up to a time, after a position, at most a count.
        assert_eq!(store.due(None, 200, 10).unwrap(), vec![(100, c), (200, b)]);
        assert_eq!(store.due(Some((100, c)), 400, 1).unwrap(), vec![(200, b)]);
        assert_eq!(store.due(Some((200, b)), 399, 10).unwrap(), vec![]);
        assert_eq!(store.due_len().unwrap(), 3);
        // Suspended without a timer, completed, deleted: no entry left.
        let completed = Status::Completed {
            outcome: Outcome::Success(vec![]),
            completed_at_ms: 5,
            expires_at_ms: 10,
        };
        store
            .submit(vec![
                put(b, Status::Suspended { wake_at_ms: None }),
                put(c, completed),
                WriteOp::DeleteInvocation { id: a },
            ])
            .await
            .unwrap();
        assert_eq!(store.due(None, u64::MAX, 10).unwrap(), vec![]);
        assert_eq!(store.due_len().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_store_from_before_the_due_index_gets_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (delayed, sleeping) = (InvocationId::random(1), InvocationId::random(2));
        {
            let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
            store
                .submit(vec![
                    WriteOp::put_new_invocation(delayed, &record(Status::Scheduled { at_ms: 50 })),
                    WriteOp::put_new_invocation(
                        sleeping,
                        &record(Status::Suspended {
                            wake_at_ms: Some(70),
                        }),
                    ),
                ])
                .await
                .unwrap();
            store.close();
        }
        {
            // As a binary from before wrote it: format-1 hints, no index, no marker.
            let db = Database::create(store_file(dir.path())).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut unfinished = txn.open_table(UNFINISHED).unwrap();
                for (id, status) in [
                    (delayed, Status::Scheduled { at_ms: 50 }),
                    (
                        sleeping,
                        Status::Suspended {
                            wake_at_ms: Some(70),
                        },
                    ),
                ] {
                    let hint = UnfinishedHint::of(&record(status));
                    #[derive(serde::Serialize)]
                    struct V1 {
                        seq: u64,
                        target: Target,
                        suspended: Option<Option<u64>>,
                    }
                    let v1 = records::encode(&V1 {
                        seq: hint.seq,
                        target: hint.target,
                        suspended: hint.suspended,
                    });
                    unfinished
                        .insert(id.storage_key().as_slice(), v1.as_slice())
                        .unwrap();
                }
                txn.delete_table(DUE).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("format_version", 5u32.to_be_bytes().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        assert_eq!(
            store.due(None, u64::MAX, 10).unwrap(),
            vec![(50, delayed), (70, sleeping)]
        );
        let hints = store.unfinished().unwrap();
        assert!(
            hints.iter().all(|(_, h)| h.due_at_ms.is_some()),
            "{hints:?}"
        );
        // Later writes move the entries as before.
        store
            .submit(vec![WriteOp::put_invocation(
                delayed,
                &record(Status::Runnable),
            )])
            .await
            .unwrap();
        assert_eq!(store.due(None, u64::MAX, 10).unwrap(), vec![(70, sleeping)]);
    }

    #[test]
    fn a_format_1_hint_decodes_and_knows_a_suspended_wake_up_only() {
        let hint = UnfinishedHint::of(&record(Status::Suspended {
            wake_at_ms: Some(9),
        }));
        #[derive(serde::Serialize)]
        struct V1 {
            seq: u64,
            target: Target,
            suspended: Option<Option<u64>>,
        }
        let v1 = |suspended| {
            records::encode(&V1 {
                seq: 1,
                target: hint.target.clone(),
                suspended,
            })
        };
        let decoded = UnfinishedHint::decode(&v1(Some(Some(9)))).unwrap();
        assert!(decoded.known_due);
        assert_eq!(decoded.hint, hint);
        let delayed = UnfinishedHint::decode(&v1(None)).unwrap();
        assert!(!delayed.known_due);
        assert_eq!(UnfinishedHint::decode(&hint.encode()).unwrap().hint, hint);
    }

    /// What a crash leaves: the folder's files as they are while the store is open (the
    /// unsynced part of redb's state lives in its memory, not in the file).
    fn crash_copy(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for name in [FILE_NAME].into_iter().chain(SEGMENT_NAMES) {
            std::fs::copy(from.join(name), to.path().join(name)).unwrap();
        }
        to
    }

    /// A store in `dir` that does not checkpoint on its own: writes stay in its log.
    fn store_without_checkpoints(dir: &Path) -> RedbStorage {
        let options = RedbOptions {
            idle_checkpoint: std::time::Duration::from_secs(3600),
            ..RedbOptions::default()
        };
        RedbStorage::open(dir, &options).unwrap()
    }

    /// A store whose log holds `n` records (one write each) that its file does not.
    async fn store_with_logged_writes(n: u32) -> (tempfile::TempDir, RedbStorage, InvocationId) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_without_checkpoints(dir.path());
        let id = InvocationId::random(7);
        let entry = JournalEntry::ClearState { name: "x".into() };
        for i in 0..n {
            store
                .submit(vec![WriteOp::put_journal(id, i, &entry)])
                .await
                .unwrap();
        }
        (dir, store, id)
    }

    /// Pages damaged all over the store file (a byte in every 997 past the header): opening
    /// says `corrupt` and names the file, whatever redb trips over, and never panics.
    #[tokio::test]
    async fn a_store_file_damaged_all_over_refuses_to_open_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
            let entry = JournalEntry::ClearState { name: "x".into() };
            for n in 0..200u32 {
                let id = InvocationId::random(n.into());
                let record = record(Status::Suspended { wake_at_ms: None });
                store
                    .submit(vec![
                        WriteOp::put_invocation(id, &record),
                        WriteOp::put_journal(id, 0, &entry),
                    ])
                    .await
                    .unwrap();
            }
            store.close();
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        for at in (4096..bytes.len()).step_by(997) {
            bytes[at] ^= 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let opened =
            std::panic::catch_unwind(|| RedbStorage::open(dir.path(), &RedbOptions::default()));
        let err = opened
            .expect("no panic")
            .err()
            .expect("a damaged store does not open");
        let message = err.to_string();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{message}");
        assert!(message.contains(FILE_NAME), "{message}");
    }

    #[tokio::test]
    async fn a_damaged_record_in_the_middle_of_the_log_refuses_to_open() {
        let (dir, _store, id) = store_with_logged_writes(40).await;
        let crashed = crash_copy(dir.path());
        // Flip one payload byte of record 20 of 40.
        let wal_path = crashed.path().join(SEGMENT_NAMES[0]);
        let mut bytes = std::fs::read(&wal_path).unwrap();
        let mut at = 0usize;
        for _ in 0..19 {
            at += 16 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 20] ^= 0x01;
        std::fs::write(&wal_path, &bytes).unwrap();
        let err = RedbStorage::open(crashed.path(), &RedbOptions::default())
            .err()
            .expect("a damaged log does not open");
        let message = err.to_string();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{message}");
        assert!(message.contains("corrupt"), "{message}");
        assert!(message.contains(SEGMENT_NAMES[0]), "{message}");
        assert!(message.contains(&format!("offset {at}")), "{message}");
        // Undamaged, the same log replays every write.
        let intact = crash_copy(dir.path());
        let reopened = RedbStorage::open(intact.path(), &RedbOptions::default()).unwrap();
        assert_eq!(reopened.journal(&id).unwrap().len(), 40);
    }

    #[tokio::test]
    async fn a_log_left_from_another_store_is_not_replayed() {
        let (dir, _store, id) = store_with_logged_writes(5).await;
        let crashed = crash_copy(dir.path());
        // The store file is deleted and created anew; its old log stays.
        std::fs::remove_file(crashed.path().join(FILE_NAME)).unwrap();
        let fresh = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        assert!(fresh.journal(&id).unwrap().is_empty());
        assert!(fresh.unfinished().unwrap().is_empty());
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_a_crash_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_without_checkpoints(dir.path());
        let id = InvocationId::random(7);
        store
            .submit(vec![WriteOp::put_invocation(id, &record(Status::Runnable))])
            .await
            .unwrap();
        let crashed = crash_copy(dir.path());
        // The store file alone misses it: only the log has it.
        {
            let db = Database::create(crashed.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(INVOCATIONS).unwrap();
            assert!(table.get(id.storage_key().as_slice()).unwrap().is_none());
        }
        let reopened = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        assert!(reopened.invocation(&id).unwrap().is_some());
        assert_eq!(reopened.unfinished().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn recovery_scans_pass_over_what_the_head_turns_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        let keyed = |status| {
            let mut r = record(status);
            r.target.key = Some("k".into());
            r
        };
        let napping = Status::Suspended {
            wake_at_ms: Some(90),
        };
        let stored = [
            (InvocationId::random(1), record(Status::Runnable)),
            (InvocationId::random(2), record(napping.clone())),
            (InvocationId::random(3), keyed(napping)),
            (
                InvocationId::random(4),
                record(Status::Scheduled { at_ms: 80 }),
            ),
        ];
        let ops = stored
            .iter()
            .map(|(id, r)| WriteOp::put_invocation(*id, r))
            .collect();
        store.submit(ops).await.unwrap();
        let mut heads = Vec::new();
        let kept = store
            .unfinished_where(&mut |id, head| {
                let head = head.expect("this binary writes heads");
                heads.push((id, head));
                head.keyed || !head.suspended && head.due_at_ms.is_none()
            })
            .unwrap();
        // Every hint's head is offered, and only those accepted are decoded and returned.
        assert_eq!(heads.len(), 4);
        for (id, r) in &stored {
            let offered = heads.iter().find(|(i, _)| i == id).unwrap().1;
            assert_eq!(offered, UnfinishedHint::of(r).head());
        }
        let mut kept: Vec<_> = kept.into_iter().map(|(id, _)| id).collect();
        kept.sort();
        let mut expected = vec![stored[0].0, stored[2].0];
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(store.unfinished().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_format_6_store_replays_its_one_file_log_and_is_upgraded() {
        let (dir, _store, id) = store_with_logged_writes(30).await;
        // A crash of a binary of format 6: its store and its one log file, nothing else.
        let crashed = tempfile::tempdir().unwrap();
        for name in [FILE_NAME, SEGMENT_NAMES[0]] {
            std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
        }
        let version = |path: &Path| {
            let db = Database::create(path.join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            let found = {
                let mut meta = txn.open_table(META).unwrap();
                let found = meta
                    .get("format_version")
                    .unwrap()
                    .map(|v| v.value().to_vec());
                if found.as_deref() == Some(FORMAT_VERSION.to_be_bytes().as_slice()) {
                    meta.insert("format_version", 6u32.to_be_bytes().as_slice())
                        .unwrap();
                }
                found
            };
            txn.commit().unwrap();
            u32::from_be_bytes(found.unwrap().try_into().unwrap())
        };
        assert_eq!(version(crashed.path()), FORMAT_VERSION, "then set to 6");
        let reopened = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        assert_eq!(reopened.journal(&id).unwrap().len(), 30);
        drop(reopened);
        assert_eq!(version(crashed.path()), FORMAT_VERSION);
    }

    #[tokio::test]
    async fn a_full_log_checkpoints_and_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        let id = InvocationId::random(7);
        let entry = JournalEntry::Run {
            name: "big".into(),
            outcome: Outcome::Success(vec![7; 100_000]),
        };
        // About four segments' worth through the log: several checkpoints on the way.
        let entries = 40 * (INITIAL_CAPACITY >> 20) as u32;
        for i in 0..entries {
            store
                .submit(vec![WriteOp::put_journal(id, i, &entry)])
                .await
                .unwrap();
        }
        let stats = store.writer_stats();
        assert!(stats.checkpoints >= 2, "{stats:?}");
        assert!(
            stats.checkpoint_max_micros > 0
                && stats.checkpoint_micros >= stats.checkpoint_max_micros
        );
        let crashed = crash_copy(dir.path());
        let reopened = RedbStorage::open(crashed.path(), &RedbOptions::default()).unwrap();
        assert_eq!(reopened.journal(&id).unwrap().len(), entries as usize);
        // A clean close leaves nothing to replay: the store covers the whole log.
        drop(store);
        let applied = {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            let value = meta.get(WAL_APPLIED).unwrap().unwrap();
            u64::from_be_bytes(value.value().try_into().unwrap())
        };
        assert!(applied >= u64::from(entries), "{applied}");
        let salt = {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            let value = meta.get(WAL_SALT).unwrap().unwrap();
            u64::from_be_bytes(value.value().try_into().unwrap())
        };
        let (_, replayed) = Log::open(&OsFiles, dir.path(), applied, salt).unwrap();
        assert!(replayed.is_empty());
        let closed = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        assert_eq!(closed.journal(&id).unwrap().len(), entries as usize);
    }

    #[test]
    fn an_unusable_log_is_an_io_error_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SEGMENT_NAMES[0])).unwrap();
        let err = RedbStorage::open(dir.path(), &RedbOptions::default())
            .err()
            .expect("refused");
        assert!(matches!(err, OpenError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
        let err = RedbStorage::open(dir.path(), &RedbOptions::default())
            .err()
            .expect("locked");
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    }

    #[test]
    fn another_format_version_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap());
        {
            let db = Database::create(store_file(dir.path())).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", 99u32.to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStorage::open(dir.path(), &RedbOptions::default())
            .err()
            .expect("incompatible");
        assert!(matches!(err, OpenError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[test]
    fn the_secret_is_drawn_once_and_kept() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = RedbStorage::open(a.path(), &RedbOptions::default()).unwrap();
        let secret = first.secret();
        drop(first);
        let again = RedbStorage::open(a.path(), &RedbOptions::default()).unwrap();
        assert_eq!(again.secret(), secret, "kept across reopen");
        let other = RedbStorage::open(b.path(), &RedbOptions::default()).unwrap();
        assert_ne!(other.secret(), secret, "each store draws its own");
    }

    #[test]
    fn partitions_are_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |partitions| RedbOptions {
            partitions,
            ..RedbOptions::default()
        };
        drop(RedbStorage::open(dir.path(), &opts(16)).unwrap());
        assert_eq!(
            RedbStorage::open(dir.path(), &opts(256))
                .unwrap()
                .partitions(),
            16
        );
    }

    #[test]
    fn garbage_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(store_file(dir.path()), b"not a database at all, just text").unwrap();
        let err = RedbStorage::open(dir.path(), &RedbOptions::default())
            .err()
            .expect("corrupt");
        assert!(
            matches!(err, OpenError::Corrupt { .. } | OpenError::Io { .. }),
            "{err}"
        );
    }

    /// A store on a simulated disk whose syncs a test can stall.
    fn store_on(disk: &super::super::faults::Disk, options: RedbOptions) -> RedbStorage {
        let options = RedbOptions {
            idle_checkpoint: std::time::Duration::from_secs(3600),
            min_free_bytes: 0,
            ..options
        };
        RedbStorage::open_with(Path::new("/sim"), &options, disk).unwrap()
    }

    /// A batch carrying about `bytes` bytes.
    fn batch_of(bytes: usize) -> Vec<WriteOp> {
        vec![WriteOp::SetState {
            scope: StateScope {
                service: "S".into(),
                key: "k".into(),
            },
            name: "v".into(),
            value: vec![7; bytes],
        }]
    }

    #[tokio::test]
    async fn a_writer_behind_refuses_new_work_until_it_catches_up() {
        let disk = super::super::faults::Disk::new(1);
        let store = store_on(
            &disk,
            RedbOptions {
                max_queued_bytes: 4096,
                ..RedbOptions::default()
            },
        );
        let stalled = disk.stall_syncs();
        let first = store.submit(batch_of(3000));
        assert!(store.writer_busy().is_ok(), "3 KiB queued of 4 KiB");
        let second = store.submit(batch_of(3000));
        let refused = store.writer_busy().unwrap_err().to_string();
        assert!(refused.contains("writer busy"), "{refused}");
        assert!(refused.contains("RESTATE_WRITER_QUEUE_BYTES"), "{refused}");
        assert!(store.writer_stats().queued_bytes > 6000);
        drop(stalled);
        first.await.unwrap();
        second.await.unwrap();
        assert!(store.writer_busy().is_ok());
        assert_eq!(store.writer_stats().queued_bytes, 0);
    }

    /// Ten 600-byte batches queue behind a stalled commit; how many commits take them.
    async fn commits_for_queued_batches(max_group_bytes: usize) -> WriterStats {
        let disk = super::super::faults::Disk::new(2);
        let store = store_on(
            &disk,
            RedbOptions {
                max_group_bytes,
                ..RedbOptions::default()
            },
        );
        let stalled = disk.stall_syncs();
        let mut waiters = vec![store.submit(batch_of(10))];
        // The writer takes the first batch and waits on its sync; the rest queue behind it.
        let log = Path::new("/sim").join(SEGMENT_NAMES[0]);
        use std::time::Instant;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while disk.unsynced(&log).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the writer never wrote the first batch"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        waiters.extend((0..10).map(|_| store.submit(batch_of(600))));
        drop(stalled);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let stats = store.writer_stats();
        assert_eq!(stats.batches, 11);
        assert!(stats.bytes >= 6000, "{stats:?}");
        stats
    }

    #[tokio::test]
    async fn commit_groups_are_bounded_in_bytes() {
        // Each 600-byte batch fills a 1000-byte group on its own.
        assert_eq!(commits_for_queued_batches(1000).await.commits, 11);
        // Unbounded, the ten share the commit after the stalled one.
        assert_eq!(
            commits_for_queued_batches(DEFAULT_MAX_GROUP_BYTES)
                .await
                .commits,
            2
        );
    }

    /// Every row of the tables writes reach, table by table (a table never opened is empty).
    fn dump(db: &Database) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        fn rows<V: redb::Value + 'static>(
            txn: &redb::ReadTransaction,
            definition: TableDefinition<&'static [u8], V>,
            value: impl Fn(V::SelfType<'_>) -> Vec<u8>,
        ) -> Vec<(Vec<u8>, Vec<u8>)> {
            match txn.open_table(definition) {
                Ok(table) => table
                    .iter()
                    .unwrap()
                    .map(|row| {
                        let (k, v) = row.unwrap();
                        (k.value().to_vec(), value(v.value()))
                    })
                    .collect(),
                Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                Err(e) => panic!("{e}"),
            }
        }
        let txn = db.begin_read().unwrap();
        let bytes = |v: &[u8]| v.to_vec();
        vec![
            rows(&txn, INVOCATIONS, bytes),
            rows(&txn, JOURNAL, bytes),
            rows(&txn, UNFINISHED, bytes),
            rows(&txn, EXPIRY, |()| Vec::new()),
            rows(&txn, DUE, |()| Vec::new()),
            rows(&txn, STATE, bytes),
            rows(&txn, WAKEUPS, |()| Vec::new()),
        ]
    }

    /// The writes a later write of one transaction hides are dropped (`hidden_writes`), and the
    /// tables end as they end when every write is applied in a transaction of its own: random
    /// sequences of record puts in every status, cancels, deletions, wake-ups, journal entries
    /// and state writes over three invocations and one key.
    #[test]
    fn dropping_hidden_writes_leaves_the_tables_as_applying_every_write_does() {
        use rand::{Rng, SeedableRng};
        // Fixed ids, so that a failing seed replays.
        let ids: Vec<InvocationId> = (1..=3u8)
            .map(|n| InvocationId::from_storage_key(&[n; 24]).expect("24 bytes"))
            .collect();
        let scope = StateScope {
            service: "S".into(),
            key: "k".into(),
        };
        let (mut dropped, mut counted_stored) = (0, 0);
        for seed in 0..150u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let ops: Vec<WriteOp> = (0..rng.random_range(1..40))
                .map(|_| {
                    let id = ids[rng.random_range(0..ids.len())];
                    let at = rng.random_range(1..4u64) * 1_000;
                    match rng.random_range(0..10) {
                        0..=3 => {
                            let status = match rng.random_range(0..5) {
                                0 => Status::Scheduled { at_ms: at },
                                1 => Status::Runnable,
                                2 => Status::Suspended {
                                    wake_at_ms: rng.random_bool(0.5).then_some(at),
                                },
                                3 => Status::Paused,
                                _ => Status::Completed {
                                    outcome: Outcome::Success(vec![1]),
                                    completed_at_ms: at,
                                    expires_at_ms: at + 5_000,
                                },
                            };
                            // The first invocation's id is derived from an idempotency key:
                            // the filter of derived ids counts its record.
                            let record = InvocationRecord {
                                idempotency_key: (id == ids[0]).then(|| "key".into()),
                                ..record(status)
                            };
                            if rng.random_bool(0.2) {
                                WriteOp::put_new_invocation(id, &record)
                            } else {
                                WriteOp::put_invocation(id, &record)
                            }
                        }
                        4 => WriteOp::RequestCancel { id },
                        5 => WriteOp::DeleteInvocation { id },
                        6 => WriteOp::Wake {
                            id,
                            index: rng.random_range(0..2),
                        },
                        7 => WriteOp::PutJournal {
                            id,
                            index: rng.random_range(0..2),
                            encoded: vec![rng.random()],
                        },
                        8 => WriteOp::SetState {
                            scope: scope.clone(),
                            name: ["a", "b"][rng.random_range(0..2)].into(),
                            value: vec![rng.random()],
                        },
                        _ => WriteOp::ClearState {
                            scope: scope.clone(),
                            name: "a".into(),
                        },
                    }
                })
                .collect();
            let refs: Vec<&WriteOp> = ops.iter().collect();
            dropped += hidden_writes(&refs).iter().filter(|h| **h).count();
            let (one, each) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let one = Database::create(one.path().join("s.redb")).unwrap();
            let each = Database::create(each.path().join("s.redb")).unwrap();
            // The filter (4 MiB of counters each) in every tenth sequence.
            let counted = seed % 10 == 0;
            let filter = || match counted {
                true => DerivedIds::new(),
                false => DerivedIds::unknown(),
            };
            let (one_derived, each_derived) = (filter(), filter());
            commit_ops(&one, &one_derived, ops.iter(), Durability::None, None).unwrap();
            for op in &ops {
                commit_ops(
                    &each,
                    &each_derived,
                    std::iter::once(op),
                    Durability::None,
                    None,
                )
                .unwrap();
            }
            assert_eq!(dump(&one), dump(&each), "seed {seed}: {ops:?}");
            if counted {
                let stored = dump(&one)[0]
                    .iter()
                    .any(|(key, _)| key.as_slice() == ids[0].storage_key());
                assert_eq!(
                    one_derived.may_hold(&ids[0]),
                    stored,
                    "seed {seed}: {ops:?}"
                );
                assert_eq!(
                    each_derived.may_hold(&ids[0]),
                    stored,
                    "seed {seed}: {ops:?}"
                );
                counted_stored += usize::from(stored);
            }
        }
        assert!(dropped > 100, "the sequences hide few writes: {dropped}");
        assert!(
            counted_stored > 3,
            "the derived record is rarely left stored"
        );
    }
}

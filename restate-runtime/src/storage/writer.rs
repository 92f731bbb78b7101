//! The writer thread of the redb store: group commit through the write-ahead log, each group
//! applied to redb without a sync once it is answered; and the checkpointer thread, which
//! makes the store durable while the writer goes on.
//!
//! A checkpoint is a durable redb commit, tens of milliseconds under load, and it holds redb's
//! write lock. When the active log segment fills, the writer switches to the other segment and
//! hands the checkpoint to the checkpointer. Groups that arrive meanwhile are appended and
//! synced (durable), acknowledged, and kept aside; once the checkpoint ends they are applied to
//! redb a slice at a time, one slice after each of the next group commits (all at once would
//! hold up the commits behind them). Readers must see every acknowledged write: a read of one
//! invocation record or one state value finds its latest write among the groups kept aside
//! (`kept_aside.rs`), or learns that none of them wrote it and redb is current; a read of one
//! journal takes their writes over what redb holds ([`Visibility::snapshot`]); a read of one
//! invocation's result waiters or one key's state names and promises waits for them only if
//! one of them wrote there; any other read that starts while groups wait to be applied waits
//! for them ([`Visibility`]). Commits never wait for a checkpoint (unless a segment fills
//! before the previous checkpoint ends).
//!
//! Without a checkpoint, a group is kept aside the same way only from just before its answer
//! until the writer has applied it, right after answering: the answer does not wait for redb,
//! and the redb commit (tens of microseconds of CPU however little it writes) is spent while
//! the next group gathers. Applying up to 8 groups in one transaction instead spends that
//! commit less often; side by side (`BENCHMARKS.md`) neither was ahead beyond this machine's
//! noise, and this way a read never has to ask for an early apply. A checkpoint starts only
//! once every group is applied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::{oneshot, watch};

use super::derived_ids::DerivedIds;
use super::kept_aside::{Found, KeptAside, LatestWrites};
use super::log::Log;
use super::redb_store::{RecoveredLog, commit_ops};
use super::{StorageError, WriteOp, WriterStats};

/// Upper bound on batches in one transaction, so one commit never grows without limit.
const MAX_GROUP: usize = 4096;
/// How often the writer looks whether a running checkpoint has ended, when nothing is queued.
const CHECKPOINT_POLL: Duration = Duration::from_millis(1);
/// Operations applied to redb in one transaction while batches wait to be committed: the
/// groups kept aside during a checkpoint are applied in slices of about this many, one slice
/// after each group commit, not all at once ahead of the next commit (with 4 MiB segments, the
/// 100-230 groups of one checkpoint took 6-14 ms to apply, and every commit waited for them).
const APPLY_SLICE_OPS: usize = 256;

pub(super) struct Request {
    pub ops: Vec<WriteOp>,
    /// What the ops carry ([`WriteOp::size`]).
    pub bytes: usize,
    pub done: oneshot::Sender<Result<(), StorageError>>,
}

/// Which acknowledged writes readers can see in redb: all of them, except the groups kept
/// aside until the writer applies them.
#[derive(Default)]
pub(super) struct Visibility {
    /// Some acknowledged group is not applied yet (the slow path's flag).
    behind: AtomicBool,
    seen: Mutex<Seen>,
    caught_up: Condvar,
}

#[derive(Default)]
struct Seen {
    /// The last group acknowledged before it was applied.
    acknowledged: u64,
    /// The last group applied to redb.
    applied: u64,
    /// The writer failed: what is acknowledged may never be applied in this process.
    failed: Option<String>,
    /// What the groups acknowledged and not applied yet wrote.
    kept: KeptAside,
    /// Reads waiting for a group to be applied: only then does an apply wake anyone (a
    /// condition variable's notify is a system call even when nobody waits, once per group).
    waiting: usize,
}

impl Visibility {
    /// Reads one key (through `find` in the writes kept aside) as a read begun now would see
    /// it once everything acknowledged is applied: from those writes, or from redb when none
    /// of them wrote it, waiting only when one changed it in place.
    pub(super) fn find(
        &self,
        find: impl Fn(&LatestWrites) -> Found,
    ) -> Result<Found, StorageError> {
        match self.with_kept(find)? {
            None => Ok(Found::Store),
            Some(Found::Wait) => self.wait().map(|()| Found::Store),
            Some(found) => Ok(found),
        }
    }

    /// What `find` takes from the writes kept aside (`None`: none of them is of interest), and
    /// a read transaction (`begin`) that sees every group applied before those writes, maybe
    /// some of them, never a group after them: begun while none can be acknowledged or stop
    /// being kept aside, when `find` found something. Nothing waits.
    pub(super) fn snapshot<F, T>(
        &self,
        find: impl FnOnce(&LatestWrites) -> Option<F>,
        begin: impl Fn() -> Result<T, StorageError>,
    ) -> Result<(Option<F>, T), StorageError> {
        let under_lock = self.with_kept(|kept| find(kept).map(|found| (found, begin())))?;
        match under_lock.flatten() {
            Some((found, txn)) => Ok((Some(found), txn?)),
            // No kept write is of interest: redb is current for it.
            None => Ok((None, begin()?)),
        }
    }

    /// `f` on the writes kept aside, under their lock (`None`: nothing is kept aside).
    fn with_kept<R>(&self, f: impl FnOnce(&LatestWrites) -> R) -> Result<Option<R>, StorageError> {
        if !self.behind.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut seen = self.seen.lock().expect("visibility lock");
        if let Some(reason) = &seen.failed {
            return Err(StorageError::Poisoned(reason.clone()));
        }
        Ok(Some(f(seen.kept.latest())))
    }

    /// Returns once everything acknowledged so far is visible to a read transaction begun
    /// after it. That can take as long as a checkpoint (on a store of 1 GB under fanout, the
    /// timers' read of due times waited up to 17 ms, the metrics' count of them 42 ms): on a
    /// tokio worker the worker is handed on first, so that its other tasks run meanwhile.
    pub(super) fn wait(&self) -> Result<(), StorageError> {
        self.wait_unless(|_| false)
    }

    /// [`Self::wait`] for a read of what only some writes change: it waits only if `touched`
    /// says a group kept aside made one of them, and reads redb at once otherwise.
    pub(super) fn wait_if(
        &self,
        touched: impl Fn(&LatestWrites) -> bool,
    ) -> Result<(), StorageError> {
        self.wait_unless(|kept| !touched(kept.latest()))
    }

    /// [`Self::wait`], unless `untouched` says no group kept aside wrote what the read needs
    /// (only then are their writes indexed).
    fn wait_unless(
        &self,
        untouched: impl FnOnce(&mut KeptAside) -> bool,
    ) -> Result<(), StorageError> {
        if !self.behind.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut seen = self.seen.lock().expect("visibility lock");
        if seen.failed.is_none() && untouched(&mut seen.kept) {
            return Ok(());
        }
        let target = seen.acknowledged;
        // Unlocked while the worker is handed on (that may start a thread): the writer takes
        // this lock before every answer.
        drop(seen);
        super::hand_worker_on(|| self.wait_for(target))
    }

    /// Blocks until group `target` is applied, or the writer failed. It locks again and checks
    /// before it sleeps, so an apply that landed after the caller let go of the lock is seen.
    fn wait_for(&self, target: u64) -> Result<(), StorageError> {
        let mut seen = self.seen.lock().expect("visibility lock");
        seen.waiting += 1;
        let result = loop {
            if seen.applied >= target {
                break Ok(());
            }
            if let Some(reason) = &seen.failed {
                break Err(StorageError::Poisoned(reason.clone()));
            }
            seen = self.caught_up.wait(seen).expect("visibility lock");
        };
        seen.waiting -= 1;
        result
    }

    /// Group `seq` (`ops`) is acknowledged before it is applied: called before its answer is
    /// sent.
    fn acknowledge_ahead(&self, seq: u64, ops: &Arc<Vec<WriteOp>>) {
        let mut seen = self.seen.lock().expect("visibility lock");
        seen.acknowledged = seq;
        seen.kept.add(ops);
        self.behind.store(true, Ordering::SeqCst);
    }

    /// Everything up to `seq` is applied.
    fn applied(&self, seq: u64) {
        let mut seen = self.seen.lock().expect("visibility lock");
        seen.applied = seq;
        if seen.applied >= seen.acknowledged {
            seen.kept.clear();
            self.behind.store(false, Ordering::SeqCst);
        }
        if seen.waiting > 0 {
            self.caught_up.notify_all();
        }
    }

    pub(super) fn fail(&self, reason: &str) {
        // Also after a panic under this lock (the writer's, reported here): the waiting reads
        // must be woken with the failure, not left waiting.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.failed = Some(reason.to_owned());
        drop(seen);
        self.caught_up.notify_all();
    }
}

/// What bounds the writer's work: when it checkpoints on its own, how large a group gets, and
/// the counts of queued bytes and unanswered batches it releases as it answers.
pub(super) struct WriterLimits {
    pub idle_checkpoint: Duration,
    pub max_group_bytes: usize,
    pub queued: Arc<AtomicUsize>,
    pub unanswered: Arc<AtomicUsize>,
}

/// The writer thread's state.
pub(super) struct Writer {
    log: Log,
    /// Sequence number of the last record (logged, or committed to the store directly).
    seq: u64,
    /// Sequence number of the last durable store commit.
    checkpointed: u64,
    last_write: Instant,
    /// Groups logged and acknowledged, not applied to redb yet, in order: the last one is
    /// record `seq`.
    deferred: VecDeque<Arc<Vec<WriteOp>>>,
    checkpointer: Checkpointer,
    /// Counted by every transaction that adds or removes an invocation record.
    derived: Arc<DerivedIds>,
    visibility: Arc<Visibility>,
    limits: WriterLimits,
    stats: Arc<Mutex<WriterStats>>,
    poisoned: Option<String>,
    failure: Arc<watch::Sender<Option<String>>>,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        derived: Arc<DerivedIds>,
        recovered: RecoveredLog,
        limits: WriterLimits,
        stats: Arc<Mutex<WriterStats>>,
        visibility: Arc<Visibility>,
        failure: Arc<watch::Sender<Option<String>>>,
    ) -> std::io::Result<Self> {
        let RecoveredLog { log, applied } = recovered;
        Ok(Self {
            log,
            seq: applied,
            checkpointed: applied,
            last_write: Instant::now(),
            deferred: VecDeque::new(),
            checkpointer: Checkpointer::spawn(db, derived.clone())?,
            derived,
            visibility,
            limits,
            stats,
            poisoned: None,
            failure,
        })
    }

    pub(super) fn run(mut self, db: &Database, rx: &mpsc::Receiver<Request>) {
        // A batch taken from the queue that did not fit the last group opens the next one.
        let mut carried: Option<Request> = None;
        loop {
            // Also between groups that arrive back to back (barriers need no commit, so
            // nothing else would take in a checkpoint that ended).
            if self.poisoned.is_none()
                && let Err(e) = self.poll_checkpoint()
            {
                self.poison(format!("checkpoint failed: {e}"));
            }
            let behind = self.poisoned.is_none() && !self.deferred.is_empty();
            let wait = if self.checkpointer.running.is_some() || behind {
                CHECKPOINT_POLL
            } else {
                self.limits.idle_checkpoint
            };
            let first = match carried.take() {
                Some(first) => first,
                None => match rx.try_recv() {
                    Ok(first) => first,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => match rx.recv_timeout(wait) {
                        Ok(first) => first,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.between_groups(db);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                },
            };
            let mut bytes = first.bytes;
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) if bytes + next.bytes > self.limits.max_group_bytes => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => {
                        bytes += next.bytes;
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let result = if let Some(reason) = &self.poisoned {
                Err(StorageError::Poisoned(reason.clone()))
            } else if group.iter().all(|req| req.ops.is_empty()) {
                // A group of empty batches (barriers) needs no commit: every batch queued
                // before it has already committed.
                Ok(())
            } else {
                let started = Instant::now();
                let ops: Vec<WriteOp> = group
                    .iter_mut()
                    .flat_map(|r| std::mem::take(&mut r.ops))
                    .collect();
                let result = self.commit(db, ops);
                {
                    let mut s = self.stats.lock().expect("stats lock");
                    s.commits += 1;
                    s.batches += group.len() as u64;
                    s.bytes += bytes as u64;
                    s.commit_micros += started.elapsed().as_micros() as u64;
                    s.commit_latency.observe(started.elapsed());
                }
                if let Err(e) = &result {
                    self.poison(format!("journal commit failed: {e}"));
                }
                self.last_write = Instant::now();
                result
            };
            self.limits.queued.fetch_sub(bytes, Ordering::Relaxed);
            for req in group {
                let _ = req.done.send(result.clone());
                // After the answer: its waiter is woken before the batch stops counting.
                self.limits.unanswered.fetch_sub(1, Ordering::SeqCst);
            }
            // Answered: now to redb (unless a checkpoint holds it), while the next group
            // gathers.
            self.catch_up_or_poison(db);
        }
        // Closing: leave nothing to replay.
        if self.poisoned.is_none() {
            let closed = self.await_checkpoint().and_then(|()| {
                if self.seq > self.checkpointed {
                    self.checkpoint_now(db, Vec::new())
                } else {
                    Ok(())
                }
            });
            if let Err(e) = closed {
                self.poison(format!("final checkpoint failed: {e}"));
            }
        }
    }

    /// Nothing queued: a checkpoint that ended is taken in, the groups kept aside are applied,
    /// and after [`WriterLimits::idle_checkpoint`] without writes the store is made durable, so
    /// a restart after a quiet spell has nothing to replay. A failure stops further writes, as
    /// a failed commit does (the log still holds everything, so nothing acknowledged is lost).
    fn between_groups(&mut self, db: &Database) {
        if self.poisoned.is_some() {
            return;
        }
        let result = self.poll_checkpoint().and_then(|()| {
            self.catch_up(db)?;
            let idle = self.last_write.elapsed() >= self.limits.idle_checkpoint;
            if self.checkpointer.running.is_none() && idle && self.seq > self.checkpointed {
                self.checkpoint_now(db, Vec::new())
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            self.poison(format!("checkpoint failed: {e}"));
        }
    }

    /// Refuses every write from now on and reports why: after a failed sync the OS may have
    /// dropped the dirty pages, so no later success could be trusted (law 10).
    fn poison(&mut self, reason: String) {
        tracing::error!(%reason, "storage failed; refusing further writes");
        self.failure.send_replace(Some(reason.clone()));
        self.visibility.fail(&reason);
        self.poisoned = Some(reason);
        // Nothing is applied any more: a checkpoint still running is not waited for.
        self.checkpointer.running = None;
    }

    /// Makes one group durable: appended to the log and synced, then kept aside for the writer
    /// to apply once it is answered (or once a checkpoint that holds the store ends); when it
    /// does not fit a whole segment, committed durably to the store with everything before it.
    fn commit(&mut self, db: &Database, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        if !self.append(seq, &ops)? {
            // The active segment is full: the other one takes appends once the checkpoint of
            // its own records, if one still runs, is durable; then this one's are checkpointed.
            // A segment that filled before that checkpoint ended is too small for the load:
            // it is larger when next written. Otherwise they stay small, and so do the checkpoints
            // (their length is the stall of a read that overlaps one, and sets how many groups
            // are kept aside meanwhile, to be applied when it ends).
            let filled_first = self.checkpointer.running.is_some();
            self.await_checkpoint()?;
            // The checkpoint covers every record logged so far: all of them in redb first.
            self.apply_deferred(db)?;
            self.log.switch(filled_first).map_err(log_error)?;
            self.checkpointer.start(self.seq)?;
            if !self.append(seq, &ops)? {
                self.log.outgrown();
                self.await_checkpoint()?;
                return self.checkpoint_now(db, ops);
            }
        }
        crate::failpoints::hit("log.synced");
        self.poll_checkpoint()?;
        self.seq = seq;
        // Kept aside until applied once answered, or once a checkpoint that holds the store
        // ends. Shared with the readers' index: the writer copies no bytes for it.
        let ops = Arc::new(ops);
        self.visibility.acknowledge_ahead(seq, &ops);
        self.deferred.push_back(ops);
        Ok(())
    }

    /// Applies every group kept aside to redb in one transaction (not yet durable: the log
    /// holds them), unless a checkpoint holds the store.
    fn apply_deferred(&mut self, db: &Database) -> Result<(), StorageError> {
        self.apply_front(db, usize::MAX)
    }

    /// Applies the oldest groups kept aside, whole groups of about `max_ops` operations in all
    /// (at least two while more than one waits), to redb in one transaction, unless a
    /// checkpoint holds the store.
    fn apply_front(&mut self, db: &Database, max_ops: usize) -> Result<(), StorageError> {
        if self.deferred.is_empty() || self.checkpointer.running.is_some() {
            return Ok(());
        }
        let (mut groups, mut ops) = (0, 0);
        // At least two groups while more than one waits: each commit adds one, so the
        // groups kept aside shrink by at least one per commit however large they are.
        for group in &self.deferred {
            if groups > 1 && ops + group.len() > max_ops {
                break;
            }
            ops += group.len();
            groups += 1;
        }
        let slice = self.deferred.iter().take(groups).flat_map(|g| g.iter());
        commit_ops(db, &self.derived, slice, Durability::None, None).map_err(backend)?;
        self.deferred.drain(..groups);
        self.visibility
            .applied(self.seq - self.deferred.len() as u64);
        Ok(())
    }

    /// Applies the groups kept aside, oldest first, a slice at a time, and stops after a slice
    /// as soon as a batch waits to be committed: the catch-up after a checkpoint delays each
    /// of the next commits by one slice, none of them by all of it.
    fn catch_up(&mut self, db: &Database) -> Result<(), StorageError> {
        loop {
            self.apply_front(db, APPLY_SLICE_OPS)?;
            if self.deferred.is_empty()
                || self.checkpointer.running.is_some()
                || self.limits.unanswered.load(Ordering::SeqCst) > 0
            {
                return Ok(());
            }
        }
    }

    /// [`Self::catch_up`] between groups: a failure stops further writes, as a failed commit
    /// does (the log holds every acknowledged group, so none is lost).
    fn catch_up_or_poison(&mut self, db: &Database) {
        if self.poisoned.is_none()
            && let Err(e) = self.catch_up(db)
        {
            self.poison(format!("applying logged groups to the store failed: {e}"));
        }
    }

    fn append(&mut self, seq: u64, ops: &[WriteOp]) -> Result<bool, StorageError> {
        let refs: Vec<&WriteOp> = ops.iter().collect();
        self.log.append(seq, &refs).map_err(log_error)
    }

    /// Waits for a running checkpoint to end (commits wait meanwhile).
    fn await_checkpoint(&mut self) -> Result<(), StorageError> {
        if self.checkpointer.running.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.checkpointer.done.recv().unwrap_or_else(|_| {
            Err(StorageError::Backend(
                "the checkpointer thread ended".into(),
            ))
        });
        self.stats
            .lock()
            .expect("stats lock")
            .checkpoint_wait_micros += started.elapsed().as_micros() as u64;
        self.checkpoint_ended(result)
    }

    /// Takes in a checkpoint that has ended, if one has.
    fn poll_checkpoint(&mut self) -> Result<(), StorageError> {
        if self.checkpointer.running.is_none() {
            return Ok(());
        }
        match self.checkpointer.done.try_recv() {
            Ok(result) => self.checkpoint_ended(result),
            Err(mpsc::TryRecvError::Empty) => Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => self.checkpoint_ended(Err(
                StorageError::Backend("the checkpointer thread ended".into()),
            )),
        }
    }

    fn checkpoint_ended(
        &mut self,
        result: Result<Duration, StorageError>,
    ) -> Result<(), StorageError> {
        let covered = self.checkpointer.running.take().expect("a checkpoint ran");
        self.record_checkpoint(result?);
        self.checkpointed = covered;
        Ok(())
    }

    /// Commits `ops` and everything before them (the groups kept aside too) durably on this
    /// thread (no checkpoint may be running), then writes the log from its start again.
    fn checkpoint_now(&mut self, db: &Database, ops: Vec<WriteOp>) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        let started = Instant::now();
        let kept = self.deferred.iter().flat_map(|g| g.iter());
        let (derived, ops) = (&self.derived, kept.chain(ops.iter()));
        commit_ops(db, derived, ops, Durability::Immediate, Some(seq)).map_err(backend)?;
        self.deferred.clear();
        crate::failpoints::hit("checkpoint.committed");
        self.record_checkpoint(started.elapsed());
        self.stats
            .lock()
            .expect("stats lock")
            .checkpoint_wait_micros += started.elapsed().as_micros() as u64;
        self.seq = seq;
        self.checkpointed = seq;
        self.visibility.applied(seq);
        self.log.restart().map_err(log_error)
    }

    fn record_checkpoint(&self, took: Duration) {
        let micros = took.as_micros() as u64;
        let mut s = self.stats.lock().expect("stats lock");
        s.checkpoints += 1;
        s.checkpoint_micros += micros;
        s.checkpoint_max_micros = s.checkpoint_max_micros.max(micros);
    }
}

/// The checkpointer thread: one durable commit of the store at a time, recording the last log
/// record it covers.
struct Checkpointer {
    start: Option<mpsc::Sender<u64>>,
    done: mpsc::Receiver<Result<Duration, StorageError>>,
    /// The record the running checkpoint covers up to.
    running: Option<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    /// Ends the thread and waits for it: the store's file is closed only once it lets go.
    fn drop(&mut self) {
        self.start.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Checkpointer {
    fn spawn(db: Arc<Database>, derived: Arc<DerivedIds>) -> std::io::Result<Self> {
        let (start, requests) = mpsc::channel::<u64>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-checkpointer".into())
            .spawn(move || {
                for covered in requests {
                    let started = Instant::now();
                    let result = commit_ops(
                        &db,
                        &derived,
                        std::iter::empty(),
                        Durability::Immediate,
                        Some(covered),
                    )
                    .map_err(backend);
                    if result.is_ok() {
                        crate::failpoints::hit("checkpoint.committed");
                    }
                    if report.send(result.map(|()| started.elapsed())).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            start: Some(start),
            done,
            running: None,
            thread: Some(thread),
        })
    }

    /// Starts a durable commit of everything applied, which covers log records up to
    /// `covered`.
    fn start(&mut self, covered: u64) -> Result<(), StorageError> {
        self.start
            .as_ref()
            .and_then(|start| start.send(covered).ok())
            .ok_or_else(|| StorageError::Backend("the checkpointer thread ended".into()))?;
        self.running = Some(covered);
        Ok(())
    }
}

fn backend(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Backend(e.into().to_string())
}

fn log_error(e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("write-ahead log: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::super::faults::Disk;
    use super::super::wal::INITIAL_CAPACITY;
    use super::super::{RedbOptions, RedbStorage, StateScope, Storage, WriteOp};
    use super::Arc;

    const VALUE: usize = 64 * 1024;
    /// Values of `VALUE` bytes that take a new log segment and switch to the other one: all
    /// but the last fit in it (15 of 16 with 1 MiB segments).
    const FILL: u32 = (INITIAL_CAPACITY / VALUE as u64) as u32;
    /// Values past the switch: the first segment's checkpoint starts, and nine more values go
    /// to the other segment behind it.
    const PAST_FILL: u32 = FILL + 9;

    fn open(disk: &Disk) -> Arc<RedbStorage> {
        open_grouping(disk, RedbOptions::default().max_group_bytes)
    }

    /// [`open`] with groups of at most `max_group_bytes` (1: one batch per group, so that
    /// batches queued together are committed one behind the other).
    fn open_grouping(disk: &Disk, max_group_bytes: usize) -> Arc<RedbStorage> {
        let options = RedbOptions {
            idle_checkpoint: Duration::from_secs(3600),
            min_free_bytes: 0,
            max_group_bytes,
            ..RedbOptions::default()
        };
        Arc::new(RedbStorage::open_with(Path::new("/sim"), &options, disk).unwrap())
    }

    fn scope() -> StateScope {
        named("k")
    }

    /// Writes state entries `names` of 64 KiB each, one batch at a time; each must be
    /// acknowledged within a generous deadline.
    async fn write(store: &RedbStorage, names: std::ops::Range<u32>) {
        for i in names {
            let op = WriteOp::SetState {
                scope: scope(),
                name: format!("n{i}"),
                value: vec![i as u8; VALUE],
            };
            tokio::time::timeout(Duration::from_secs(30), store.submit(vec![op]))
                .await
                .unwrap_or_else(|_| panic!("write {i} waited for the stalled checkpoint"))
                .unwrap();
        }
    }

    fn stored(store: &RedbStorage, i: u32) -> Option<Vec<u8>> {
        store.state(&scope(), &format!("n{i}")).unwrap()
    }

    fn named(key: &str) -> StateScope {
        StateScope {
            service: "S".into(),
            key: key.into(),
        }
    }

    /// A small write: state `m{i}` of key `key`, holding `i`.
    fn numbered(key: &str, i: u32) -> WriteOp {
        WriteOp::SetState {
            scope: named(key),
            name: format!("m{i}"),
            value: i.to_be_bytes().to_vec(),
        }
    }

    fn read_numbered(store: &RedbStorage, key: &str, i: u32) -> Option<Vec<u8>> {
        store.state(&named(key), &format!("m{i}")).unwrap()
    }

    /// Fills the log's first segment (its checkpoint starts, and stalls while the caller holds
    /// `disk.stall_checkpoints()`), then commits `kept` groups behind it, each of two numbered
    /// writes (keys `kept` and `also`): all of them kept aside.
    async fn keep_aside(store: &RedbStorage, kept: u32) {
        write(store, 0..FILL).await;
        for i in 0..kept {
            store
                .submit(vec![numbered("kept", i), numbered("also", i)])
                .await
                .unwrap();
        }
    }

    /// Without a checkpoint, each group is applied to redb right after its answer: a read that
    /// needs redb current (here a listing of names), made as soon as its write is answered,
    /// sees every acknowledged write (from redb, or after waiting for the group kept aside),
    /// also while other writes keep the writer busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_see_every_acknowledged_group_while_commits_keep_coming() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let disk = Disk::new(7);
        let store = open(&disk);
        let stop = Arc::new(AtomicBool::new(false));
        let other = named("other");
        let streaming = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                // Bounded, so that the log's first segment never fills: no checkpoint may
                // apply what the reads below must find applied by the writer.
                let mut written = 0u32;
                while !stop.load(Ordering::SeqCst) && written < 4096 {
                    let batch = (0..16).map(|i| {
                        let op = WriteOp::SetState {
                            scope: other.clone(),
                            name: format!("s{}", i % 4),
                            value: vec![1; 32],
                        };
                        store.submit(vec![op])
                    });
                    for waiter in futures::future::join_all(batch).await {
                        waiter.unwrap();
                    }
                    written += 16;
                }
                written
            }
        });
        for n in 0..300u32 {
            let op = WriteOp::SetState {
                scope: scope(),
                name: format!("n{n}"),
                value: vec![n as u8; 8],
            };
            store.submit(vec![op]).await.unwrap();
            // On a thread of its own, within a deadline: a group left unapplied fails the test
            // here instead of holding it (a blocking task would hold the runtime's shutdown).
            let (answer, answered) = std::sync::mpsc::channel();
            std::thread::spawn({
                let store = store.clone();
                move || {
                    let names = store.state_keys(&scope()).unwrap().len();
                    let _ = answer.send((names, store.state(&scope(), &format!("n{n}")).unwrap()));
                }
            });
            let (names, value) = answered
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("a read after write {n} waited for a group in vain"));
            assert_eq!(names, n as usize + 1);
            assert_eq!(value, Some(vec![n as u8; 8]));
        }
        stop.store(true, Ordering::SeqCst);
        assert!(
            streaming.await.unwrap() > 0,
            "the other writes ran alongside"
        );
        assert_eq!(
            store.writer_stats().checkpoints,
            0,
            "no checkpoint applied them"
        );
    }

    // The guards stall the checkpointer thread across the awaits on purpose: the writes must
    // not depend on it.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_go_on_while_a_checkpoint_syncs_and_reads_see_them() {
        let disk = Disk::new(3);
        let store = open(&disk);
        // `PAST_FILL` values: the first segment fills, the writer switches to the other one and
        // checkpoints in the background, and that checkpoint's sync stalls.
        let stalled = disk.stall_checkpoints();
        write(&store, 0..PAST_FILL).await;
        assert_eq!(
            store.writer_stats().checkpoints,
            0,
            "no checkpoint could end"
        );
        // A read of one value written during the checkpoint finds it among the writes kept
        // aside at once; a read of anything else (the scope's names) waits for them to be
        // applied, then sees them.
        let last = PAST_FILL - 1;
        assert_eq!(stored(&store, last), Some(vec![last as u8; VALUE]));
        let (started, began) = std::sync::mpsc::channel();
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                started.send(()).unwrap();
                store.state_keys(&scope()).unwrap().len()
            })
        };
        began.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !reader.is_finished(),
            "the read did not wait for the stalled checkpoint"
        );
        drop(stalled);
        assert_eq!(reader.join().unwrap(), PAST_FILL as usize);
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.writer_stats().checkpoints == 0 {
            assert!(Instant::now() < deadline, "the checkpoint never ended");
            std::thread::sleep(Duration::from_millis(1));
        }

        // The second segment fills too and the first is taken again; the checkpoint of the
        // second stalls, and the power fails: every acknowledged write is in the log's two
        // segments, replayed in order.
        let stalled = disk.stall_checkpoints();
        write(&store, PAST_FILL..2 * FILL + 8).await;
        let stats = store.writer_stats();
        assert_eq!(stats.checkpoints, 1, "the second checkpoint ended");
        assert_eq!(
            stats.checkpoint_wait_micros, 0,
            "a commit waited for a checkpoint"
        );
        disk.crash();
        drop(stalled);
        drop(store);
        let store = open(&disk);
        for i in 0..2 * FILL + 8 {
            assert_eq!(stored(&store, i), Some(vec![i as u8; VALUE]), "n{i}");
        }
    }

    /// A power failure in the middle of a catch-up, between two slices applied to redb (not
    /// durably), loses no acknowledged group: those kept aside, and those answered during the
    /// catch-up, are all there after the reopen, whichever seed decides what of the unsynced
    /// writes survives.
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_two_slices_of_a_catch_up_loses_no_acknowledged_group() {
        use std::sync::atomic::{AtomicU32, Ordering};
        const KEPT: u32 = 1500;
        for seed in [31, 32, 33] {
            let disk = Disk::new(seed);
            let store = open_grouping(&disk, 1);
            let stalled = disk.stall_checkpoints();
            keep_aside(&store, KEPT).await;
            // Eight writers commit one numbered write at a time each, so that batches keep
            // waiting and the catch-up goes one slice after each commit, until the crash: at
            // the second answer once the checkpoint has ended, before that commit's slice.
            let (next, after_checkpoint) =
                (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let (store, disk) = (store.clone(), disk.clone());
                    let (next, after_checkpoint) = (next.clone(), after_checkpoint.clone());
                    tokio::spawn(async move {
                        let mut acknowledged = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            if store.submit(vec![numbered("after", i)]).await.is_err() {
                                // Fenced off by the crash.
                                return acknowledged;
                            }
                            acknowledged.push(i);
                            if store.writer_stats().checkpoints > 0
                                && after_checkpoint.fetch_add(1, Ordering::SeqCst) + 1 == 2
                            {
                                disk.crash();
                            }
                        }
                    })
                })
                .collect();
            drop(stalled);
            let mut acknowledged = Vec::new();
            for writer in writers {
                let ended = tokio::time::timeout(Duration::from_secs(30), writer).await;
                acknowledged.extend(ended.expect("the writes end at the crash").unwrap());
            }
            drop(store);
            let store = open(&disk);
            let get = |key: &str, i: u32| read_numbered(&store, key, i);
            for i in 0..KEPT {
                assert_eq!(
                    get("kept", i),
                    Some(i.to_be_bytes().to_vec()),
                    "seed {seed}: m{i}"
                );
            }
            for &i in &acknowledged {
                assert_eq!(
                    get("after", i),
                    Some(i.to_be_bytes().to_vec()),
                    "seed {seed}: after {i}"
                );
            }
            for i in 0..FILL {
                assert_eq!(
                    stored(&store, i),
                    Some(vec![i as u8; VALUE]),
                    "seed {seed}: n{i}"
                );
            }
        }
    }

    /// Groups larger than half a slice: the catch-up must still shrink the groups kept aside
    /// while commits keep coming (each commit adds one), so that reads stop waiting for them
    /// long before the load ends.
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catch_up_of_large_groups_ends_while_commits_go_on() {
        use crate::ids::InvocationId;
        use std::sync::atomic::{AtomicBool, Ordering};
        const KEPT: u64 = 10;
        const OPS: u64 = 130;
        const WINDOW: usize = 16;
        let disk = Disk::new(23);
        let store = open_grouping(&disk, 1);
        let marked = named("kept");
        // OPS small writes that touch no key's state (unless `mark`).
        let batch = {
            let marked = marked.clone();
            move |mark: bool| -> Vec<WriteOp> {
                let mut ops: Vec<WriteOp> = (0..OPS)
                    .map(|i| WriteOp::ClearResultWaiters {
                        source: InvocationId::random(i),
                    })
                    .collect();
                if mark {
                    ops[0] = WriteOp::SetState {
                        scope: marked.clone(),
                        name: "m".into(),
                        value: vec![1],
                    };
                }
                ops
            }
        };
        let stalled = disk.stall_checkpoints();
        write(&store, 0..FILL).await;
        for _ in 0..KEPT {
            store.submit(batch(true)).await.unwrap();
        }
        // A steady load: WINDOW batches always outstanding, until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let producer = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                let mut window = futures::stream::FuturesUnordered::new();
                let mut sent = 0u32;
                while !stop.load(Ordering::SeqCst) && sent < 5000 {
                    while window.len() < WINDOW {
                        window.push(store.submit(batch(false)));
                        sent += 1;
                    }
                    futures::StreamExt::next(&mut window)
                        .await
                        .unwrap()
                        .unwrap();
                }
                while let Some(answer) = futures::StreamExt::next(&mut window).await {
                    answer.unwrap();
                }
                sent
            }
        });
        drop(stalled);
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.writer_stats().checkpoints == 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_micros(100));
        }
        // At most this many groups were kept aside when it ended; a catch-up that drains at
        // least one group per commit is done well within twice as many commits.
        let ended = store.writer_stats().commits;
        let kept = ended - u64::from(FILL);
        while store.writer_stats().commits < ended + 2 * kept + 10 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_micros(100));
        }
        // The fewest commits of five reads: one read may lose its core to the writer for
        // several commits on a busy machine (it did, under other tests' load), a read that
        // waits for the catch-up waits in each.
        let (names, waited) = (0..5)
            .map(|_| {
                let before = store.writer_stats().commits;
                let names = store.state_keys(&marked).unwrap();
                (names, store.writer_stats().commits - before)
            })
            .min_by_key(|(_, waited)| *waited)
            .expect("five reads");
        let still_loaded = !producer.is_finished();
        stop.store(true, Ordering::SeqCst);
        let sent = producer.await.unwrap();
        assert_eq!(names, vec!["m".to_owned()]);
        assert!(
            still_loaded,
            "the load ended too soon to tell ({sent} sent)"
        );
        assert!(
            waited < 3,
            "a read of a key only the groups kept aside {kept} commits ago wrote waited {waited} commits"
        );
    }

    /// A read that must wait for groups kept aside behind a running checkpoint (here the due
    /// timers, which the engine reads from a task) hands its tokio worker on while it waits:
    /// with a single worker, another task still runs before the checkpoint ends.
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_read_waiting_for_a_checkpoint_leaves_its_worker_to_other_tasks() {
        let disk = Disk::new(23);
        let store = open(&disk);
        let stalled = disk.stall_checkpoints();
        // The last value switches segments; the one after is kept aside until the stalled
        // checkpoint ends.
        write(&store, 0..FILL + 1).await;
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.due(None, u64::MAX, 10) }
        });
        // Waited for on this thread (not a worker), with a deadline of the thread's own: the
        // runtime's timers would not fire while its only worker is blocked.
        let (ran, other) = std::sync::mpsc::channel();
        tokio::spawn(async move { ran.send(7).unwrap() });
        assert_eq!(
            other.recv_timeout(Duration::from_secs(30)),
            Ok(7),
            "the other task ran while the read waited"
        );
        assert!(!read.is_finished(), "the read waits for the checkpoint");
        drop(stalled);
        let due = tokio::time::timeout(Duration::from_secs(30), read).await;
        assert_eq!(
            due.expect("the read ends with the checkpoint")
                .unwrap()
                .unwrap(),
            []
        );
        assert_eq!(stored(&store, FILL), Some(vec![FILL as u8; VALUE]));
    }

    /// Once a stalled checkpoint ends, the thousands of groups kept aside behind it are applied
    /// a slice at a time between the commits queued meanwhile: reads made during that catch-up
    /// see every acknowledged write (also those a slice has not reached yet), a read that
    /// needs redb current waits for all of them, and a power failure afterwards keeps every
    /// acknowledged group.
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_kept_aside_are_applied_in_slices_while_commits_go_on() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const KEPT: u32 = 1500;
        let disk = Disk::new(17);
        // One batch per group, so that the commits queued below stay queued one behind the
        // other, and the catch-up goes one slice after each.
        let store = open_grouping(&disk, 1);
        let stalled = disk.stall_checkpoints();
        // The last value switches segments; what follows is kept aside: groups of two writes,
        // many slices' worth.
        keep_aside(&store, KEPT).await;
        assert_eq!(
            store.writer_stats().checkpoints,
            0,
            "the checkpoint stalled"
        );
        // Reads on a thread of their own, from the kept writes the catch-up reaches last,
        // until the commits below are answered.
        let done = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let (store, done) = (store.clone(), done.clone());
            move || {
                let mut reads = 0u32;
                loop {
                    let i = KEPT - 1 - reads % 500;
                    assert_eq!(
                        read_numbered(&store, "kept", i),
                        Some(i.to_be_bytes().to_vec()),
                        "m{i}"
                    );
                    reads += 1;
                    if done.load(Ordering::SeqCst) {
                        break reads;
                    }
                }
            }
        });
        let queued =
            futures::future::join_all((0..400).map(|i| store.submit(vec![numbered("after", i)])));
        let queued = tokio::spawn(queued);
        drop(stalled);
        for answer in queued.await.unwrap() {
            answer.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0, "the reads ran");
        let names = store.state_keys(&named("also"));
        assert_eq!(
            names.unwrap().len(),
            KEPT as usize,
            "a read that waits sees every group"
        );
        disk.crash();
        drop(store);
        let store = open(&disk);
        for i in 0..KEPT {
            assert_eq!(
                read_numbered(&store, "kept", i),
                Some(i.to_be_bytes().to_vec()),
                "m{i}"
            );
        }
        for i in 0..400 {
            assert_eq!(
                read_numbered(&store, "after", i),
                Some(i.to_be_bytes().to_vec()),
                "m{i}"
            );
        }
        for i in 0..FILL {
            assert_eq!(stored(&store, i), Some(vec![i as u8; VALUE]), "n{i}");
        }
    }

    /// While groups are kept aside (here behind a stalled checkpoint), a read of one key's
    /// state names waits only if one of them wrote there, and a read of one journal never
    /// waits: it takes what they wrote over redb's (a resume reads the journal a completion
    /// just wrote, under the in-flight lock).
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_wait_for_the_groups_kept_aside_only_where_they_wrote() {
        use crate::ids::InvocationId;
        use crate::storage::JournalEntry;
        let disk = Disk::new(11);
        let store = open(&disk);
        let stalled = disk.stall_checkpoints();
        // The first segment fills: its checkpoint stalls, and what follows is kept aside.
        write(&store, 0..PAST_FILL).await;
        let (touched, untouched) = (InvocationId::random(1), InvocationId::random(2));
        let entry = JournalEntry::Awakeable { outcome: None };
        store
            .submit(vec![WriteOp::put_journal(touched, 0, &entry)])
            .await
            .unwrap();
        type Read = Box<dyn FnOnce(&RedbStorage) -> usize + Send>;
        let read_on_a_thread = |read: Read| {
            let store = store.clone();
            std::thread::spawn(move || read(&store))
        };
        let other = named("other");
        let waiting = read_on_a_thread(Box::new(|s| s.state_keys(&scope()).unwrap().len()));
        // The reads of what no kept group wrote answer while the checkpoint still stalls (a
        // wrong wait would hold them until it is let go: never, here).
        let (answered, answers) = std::sync::mpsc::channel();
        let free: [Read; 3] = [
            Box::new(move |s| s.journal(&untouched).unwrap().len()),
            Box::new(move |s| s.state_keys(&other).unwrap().len()),
            Box::new(move |s| s.journal(&touched).unwrap().len()),
        ];
        for read in free {
            let answered = answered.clone();
            read_on_a_thread(Box::new(move |s| {
                let _ = answered.send(read(s));
                0
            }));
        }
        let mut seen: Vec<usize> = (0..3)
            .map(|_| {
                answers
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a read that needs no wait waited for the stalled checkpoint")
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [0, 0, 1],
            "read at once, the kept journal entry included"
        );
        assert!(
            !waiting.is_finished(),
            "a read of names a kept group wrote did not wait for it"
        );
        drop(stalled);
        assert_eq!(
            waiting.join().unwrap(),
            PAST_FILL as usize,
            "after the groups are applied"
        );
    }

    /// A journal read while groups are kept aside is what applying every acknowledged group
    /// in order gives: redb's entries, then the kept writes (entries set, a deletion clearing
    /// what came before it), whether or not some of those were applied already.
    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_read_takes_the_kept_writes_over_redbs_entries() {
        use crate::ids::InvocationId;
        use crate::storage::JournalEntry;
        let disk = Disk::new(13);
        let store = open(&disk);
        let id = InvocationId::random(3);
        let entry = |n: u64| JournalEntry::Sleep {
            wake_at_ms: n,
            cancelled: false,
        };
        let put = |index: u32, n: u64| WriteOp::put_journal(id, index, &entry(n));
        let read = |store: &Arc<RedbStorage>| {
            let store = store.clone();
            async move {
                let read = tokio::task::spawn_blocking(move || store.journal(&id).unwrap());
                tokio::time::timeout(Duration::from_secs(30), read)
                    .await
                    .expect("a journal read waited for the stalled checkpoint")
                    .unwrap()
            }
        };
        // Applied to redb before the groups below are kept aside.
        store.submit(vec![put(0, 0), put(1, 1)]).await.unwrap();
        store.invocations(None, 1).unwrap();
        let stalled = disk.stall_checkpoints();
        write(&store, 0..PAST_FILL).await;
        store.submit(vec![put(1, 11), put(2, 2)]).await.unwrap();
        assert_eq!(
            read(&store).await,
            [(0, entry(0)), (1, entry(11)), (2, entry(2))]
        );
        store
            .submit(vec![WriteOp::DeleteInvocation { id }, put(7, 7)])
            .await
            .unwrap();
        assert_eq!(
            read(&store).await,
            [(7, entry(7))],
            "the deletion clears what came before"
        );
        store.submit(vec![put(8, 8)]).await.unwrap();
        assert_eq!(read(&store).await, [(7, entry(7)), (8, entry(8))]);
        drop(stalled);
        // Once applied, redb alone gives the same.
        store.state_keys(&scope()).unwrap();
        assert_eq!(read(&store).await, [(7, entry(7)), (8, entry(8))]);
    }

    // The guard stalls the checkpointer thread across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_as_a_checkpoint_ends_keeps_the_groups_kept_aside() {
        let disk = Disk::new(5);
        let store = open(&disk);
        // The values past the first segment go to the second and are kept aside while the
        // checkpoint of the first stalls; the power fails right as it is let go, before or
        // after the checkpoint is durable and the kept groups are applied.
        let stalled = disk.stall_checkpoints();
        write(&store, 0..PAST_FILL).await;
        drop(stalled);
        disk.crash();
        drop(store);
        let store = open(&disk);
        for i in 0..PAST_FILL {
            assert_eq!(stored(&store, i), Some(vec![i as u8; VALUE]), "n{i}");
        }
    }

    /// A read's wait and the apply it waits for, in both orders: the group applied after the
    /// read let go of the lock and before it waits (the wait must not sleep), and applied while
    /// it sleeps (the apply must wake it); a writer failing while it sleeps wakes it too.
    #[test]
    fn a_wait_sees_its_group_applied_before_it_sleeps_and_is_woken_by_one_applied_after() {
        use super::super::StorageError;
        use super::Visibility;
        let deadline = Duration::from_secs(30);
        // On a thread of its own, so that a wait that never ends fails the test, not hangs it.
        let wait_for = |visibility: &Arc<Visibility>, target: u64| {
            let (tx, rx) = std::sync::mpsc::channel();
            let visibility = visibility.clone();
            std::thread::spawn(move || tx.send(visibility.wait_for(target)));
            rx
        };
        // The waiter holds the lock from counting itself until its condition variable lets go.
        let asleep = |visibility: &Visibility| {
            let started = Instant::now();
            while visibility.seen.lock().unwrap().waiting == 0 {
                assert!(
                    started.elapsed() < deadline,
                    "the read never started waiting"
                );
                std::thread::yield_now();
            }
        };
        let kept = Arc::new(Vec::new());

        let applied_first = Arc::new(Visibility::default());
        applied_first.acknowledge_ahead(1, &kept);
        applied_first.applied(1);
        let answer = wait_for(&applied_first, 1).recv_timeout(deadline);
        assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");

        let waiting_first = Arc::new(Visibility::default());
        waiting_first.acknowledge_ahead(1, &kept);
        let answer = wait_for(&waiting_first, 1);
        asleep(&waiting_first);
        assert!(
            answer.try_recv().is_err(),
            "it returned before its group was applied"
        );
        waiting_first.applied(1);
        let answer = answer.recv_timeout(deadline);
        assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");

        let failing = Arc::new(Visibility::default());
        failing.acknowledge_ahead(1, &kept);
        let answer = wait_for(&failing, 1);
        asleep(&failing);
        failing.fail("disk gone");
        let answer = answer.recv_timeout(deadline);
        assert!(
            matches!(answer, Ok(Err(StorageError::Poisoned(_)))),
            "{answer:?}"
        );
    }
}

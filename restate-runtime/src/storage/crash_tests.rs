//! Crash tests of the redb store and its log on the simulated disk (`faults`): a model test
//! that runs random batches, crashes, clean reopens and failed syncs against an in-memory model;
//! a log record torn at every byte; and checkpoints (at close, of a full log) lost in a crash.
//!
//! `STORE_MODEL_CASES` raises the model test's case count for a soak (48 by default). Group
//! commit depends on thread timing, so a failing case replays its choices but not always the
//! same grouping of batches into records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::faults::{Disk, Kept};
use super::records::{self, InvocationRecord, JournalEntry, Outcome, Status, UnfinishedHint};
use super::redb_store::{log_file, store_file};
use super::wal::INITIAL_CAPACITY;
use super::{OpenError, RedbOptions, RedbStorage, StateScope, Storage, StorageError, WriteOp};
use crate::ids::InvocationId;

const DIR: &str = "/simulated/data";
const IDS: usize = 3;
const SCOPES: usize = 2;
const NAMES: [&str; 3] = ["x", "y", "z"];
/// Two journal entries this large do not fit in a new log segment: the second is committed to the
/// store directly, in a checkpoint. (Too slow in a debug build for the model test to write
/// many: it checkpoints when a store closes.)
const BIG: usize = INITIAL_CAPACITY as usize / 1024 * 600;

/// How often the store checkpoints on its own: `Idle::Never` leaves checkpoints to a full log
/// and to closing, so that a case does not depend on how fast it runs; `Idle::Soon` checkpoints
/// after almost every group (a debug build is too slow to fill the log often), at the cost of
/// a replay that is not always exact.
#[derive(Debug, Clone, Copy)]
enum Idle {
    Never,
    Soon,
}

fn open_checkpointing(disk: &Disk, idle: Idle) -> Result<RedbStorage, OpenError> {
    let options = RedbOptions {
        cache_bytes: 4 << 20,
        partitions: 4,
        idle_checkpoint: match idle {
            Idle::Never => std::time::Duration::from_secs(3600),
            Idle::Soon => std::time::Duration::from_millis(1),
        },
        min_free_bytes: 0,
        ..RedbOptions::default()
    };
    RedbStorage::open_with(Path::new(DIR), &options, disk)
}

fn open(disk: &Disk) -> Result<RedbStorage, OpenError> {
    open_checkpointing(disk, Idle::Never)
}

fn log_path() -> PathBuf {
    log_file(Path::new(DIR))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn id(i: usize) -> InvocationId {
    InvocationId::from_storage_key(&[i as u8 + 1; 24]).expect("24 bytes")
}

fn scope(s: usize) -> StateScope {
    StateScope {
        service: "Obj".into(),
        key: format!("k{s}"),
    }
}

/// A record of invocation `i`: the even ones have an idempotency key (their ids stand for
/// derived ones: what a read of a derived id answers is checked for them).
fn record(i: usize, status: u8, seq: u8) -> InvocationRecord {
    let status = match status {
        0 => Status::Runnable,
        1 => Status::Suspended {
            wake_at_ms: Some(seq.into()),
        },
        2 => Status::Scheduled { at_ms: seq.into() },
        3 => Status::Suspended { wake_at_ms: None },
        _ => Status::Completed {
            outcome: Outcome::Success(vec![seq]),
            completed_at_ms: 5,
            expires_at_ms: 10 + u64::from(seq % 3),
        },
    };
    InvocationRecord {
        input: vec![seq],
        seq: seq.into(),
        idempotency_key: i.is_multiple_of(2).then(|| format!("ik-{i}")),
        ..InvocationRecord::for_test("Svc", None, status)
    }
}

fn entry(fill: u8, len: usize) -> JournalEntry {
    JournalEntry::Run {
        name: "r".into(),
        outcome: Outcome::Success(vec![fill; len]),
    }
}

/// One write over a small key space: indexes into `IDS`, `SCOPES` and `NAMES`.
#[derive(Debug, Clone)]
enum Op {
    Put {
        id: usize,
        status: u8,
        seq: u8,
    },
    Delete {
        id: usize,
    },
    Journal {
        id: usize,
        index: u32,
        fill: u8,
    },
    SetState {
        scope: usize,
        name: usize,
        value: u8,
    },
    ClearState {
        scope: usize,
        name: usize,
    },
    ClearAllState {
        scope: usize,
    },
    Promise {
        scope: usize,
        name: usize,
        value: u8,
    },
    Wake {
        id: usize,
        index: u32,
    },
    ClearWakes {
        id: usize,
        indexes: Vec<u32>,
    },
    Cancel {
        id: usize,
    },
}

impl Op {
    fn write_op(&self) -> WriteOp {
        match *self {
            Op::Put { id: i, status, seq } => {
                WriteOp::put_invocation(id(i), &record(i, status, seq))
            }
            Op::Delete { id: i } => WriteOp::DeleteInvocation { id: id(i) },
            Op::Journal { id: i, index, fill } => {
                WriteOp::put_journal(id(i), index, &entry(fill, 8))
            }
            Op::SetState {
                scope: s,
                name,
                value,
            } => WriteOp::SetState {
                scope: scope(s),
                name: NAMES[name].into(),
                value: vec![value],
            },
            Op::ClearState { scope: s, name } => WriteOp::ClearState {
                scope: scope(s),
                name: NAMES[name].into(),
            },
            Op::ClearAllState { scope: s } => WriteOp::ClearAllState { scope: scope(s) },
            Op::Promise {
                scope: s,
                name,
                value,
            } => WriteOp::PutPromise {
                scope: scope(s),
                name: NAMES[name].into(),
                encoded: records::encode(&Outcome::Success(vec![value])),
            },
            Op::Wake { id: i, index } => WriteOp::Wake { id: id(i), index },
            Op::ClearWakes { id: i, ref indexes } => WriteOp::ClearWakes {
                id: id(i),
                indexes: indexes.clone(),
            },
            Op::Cancel { id: i } => WriteOp::RequestCancel { id: id(i) },
        }
    }
}

fn batch(ops: &[Op]) -> Vec<WriteOp> {
    ops.iter().map(Op::write_op).collect()
}

/// What the store should hold, as `apply_op` in the store defines each write.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    invocations: BTreeMap<usize, InvocationRecord>,
    journal: BTreeMap<(usize, u32), JournalEntry>,
    state: BTreeMap<(usize, usize), u8>,
    promises: BTreeMap<(usize, usize), u8>,
    wakeups: BTreeSet<(usize, u32)>,
    unfinished: BTreeMap<usize, UnfinishedHint>,
    /// (expiry time, invocation): the purger's index.
    expiry: BTreeSet<(u64, usize)>,
}

impl Model {
    fn apply(&mut self, batch: &[Op]) {
        for op in batch {
            self.apply_op(op);
        }
    }

    fn apply_op(&mut self, op: &Op) {
        match *op {
            Op::Put { id, status, seq } => {
                let record = record(id, status, seq);
                if let Status::Completed { expires_at_ms, .. } = record.status {
                    self.unfinished.remove(&id);
                    self.wakeups.retain(|(i, _)| *i != id);
                    self.expiry.insert((expires_at_ms, id));
                } else {
                    self.unfinished.insert(id, UnfinishedHint::of(&record));
                }
                self.invocations.insert(id, record);
            }
            Op::Delete { id } => {
                if let Some(old) = self.invocations.remove(&id)
                    && let Status::Completed { expires_at_ms, .. } = old.status
                {
                    self.expiry.remove(&(expires_at_ms, id));
                }
                self.unfinished.remove(&id);
                self.wakeups.retain(|(i, _)| *i != id);
                self.journal.retain(|(i, _), _| *i != id);
            }
            Op::Journal { id, index, fill } => {
                self.journal.insert((id, index), entry(fill, 8));
            }
            Op::SetState { scope, name, value } => {
                self.state.insert((scope, name), value);
            }
            Op::ClearState { scope, name } => {
                self.state.remove(&(scope, name));
            }
            Op::ClearAllState { scope } => self.state.retain(|(s, _), _| *s != scope),
            Op::Promise { scope, name, value } => {
                self.promises.insert((scope, name), value);
            }
            Op::Wake { id, index } => {
                self.wakeups.insert((id, index));
            }
            Op::ClearWakes { id, ref indexes } => {
                for index in indexes {
                    self.wakeups.remove(&(id, *index));
                }
            }
            Op::Cancel { id } => {
                if let Some(record) = self.invocations.get_mut(&id)
                    && !matches!(record.status, Status::Completed { .. })
                {
                    record.cancel_requested = true;
                }
            }
        }
    }

    /// What the reads of [`View::of`] should return.
    fn view(&self) -> View {
        let ids = || 0..IDS;
        let cells = || (0..SCOPES).flat_map(|s| (0..NAMES.len()).map(move |n| (s, n)));
        View {
            invocations: ids().map(|i| self.invocations.get(&i).cloned()).collect(),
            derived: ids()
                .step_by(2)
                .map(|i| self.invocations.get(&i).cloned())
                .collect(),
            journals: ids()
                .map(|i| {
                    self.journal
                        .range((i, 0)..=(i, u32::MAX))
                        .map(|(&(_, index), entry)| (index, summary(entry)))
                        .collect()
                })
                .collect(),
            state: cells()
                .map(|cell| self.state.get(&cell).map(|v| vec![*v]))
                .collect(),
            state_keys: (0..SCOPES)
                .map(|s| {
                    self.state
                        .range((s, 0)..(s + 1, 0))
                        .map(|(&(_, n), _)| NAMES[n].to_owned())
                        .collect()
                })
                .collect(),
            promises: cells()
                .map(|cell| self.promises.get(&cell).map(|v| Outcome::Success(vec![*v])))
                .collect(),
            unfinished: self
                .unfinished
                .iter()
                .map(|(&i, hint)| (id(i), hint.clone()))
                .collect(),
            woken: self
                .wakeups
                .iter()
                .map(|&(i, _)| id(i))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            expired: self.expiry.iter().map(|&(_, i)| id(i)).collect(),
            due: {
                let mut due: Vec<(u64, InvocationId)> = self
                    .unfinished
                    .iter()
                    .filter_map(|(&i, hint)| Some((hint.due_at_ms?, id(i))))
                    .collect();
                due.sort_by_key(|&(at, id)| (at, id.storage_key()));
                due
            },
        }
    }
}

/// A journal entry, short enough to print: its first byte, length and checksum.
fn summary(entry: &JournalEntry) -> String {
    match entry {
        JournalEntry::Run {
            outcome: Outcome::Success(bytes),
            ..
        } => format!(
            "{}×{} (crc {:08x})",
            bytes.first().copied().unwrap_or_default(),
            bytes.len(),
            crc32fast::hash(bytes)
        ),
        other => format!("{other:?}"),
    }
}

/// Everything the model tracks, as the store's reads return it.
#[derive(Debug, PartialEq)]
struct View {
    invocations: Vec<Option<InvocationRecord>>,
    /// The even invocations read as ids derived from a key ([`Storage::derived_invocation_async`]).
    derived: Vec<Option<InvocationRecord>>,
    journals: Vec<Vec<(u32, String)>>,
    /// By scope, then name.
    state: Vec<Option<Vec<u8>>>,
    state_keys: Vec<Vec<String>>,
    /// By scope, then name.
    promises: Vec<Option<Outcome>>,
    unfinished: Vec<(InvocationId, UnfinishedHint)>,
    woken: Vec<InvocationId>,
    expired: Vec<InvocationId>,
    /// The due-time index, in its order.
    due: Vec<(u64, InvocationId)>,
}

impl View {
    /// The reads in which `self` (the store's) differs from `expected`, both sides shown.
    fn diff(&self, expected: &View) -> String {
        let mut out = String::new();
        macro_rules! compare {
            ($($field:ident),*) => {$(
                if self.$field != expected.$field {
                    out += &format!(
                        "{}:\n  store: {:?}\n  model: {:?}\n",
                        stringify!($field),
                        self.$field,
                        expected.$field
                    );
                }
            )*};
        }
        compare!(
            invocations,
            derived,
            journals,
            state,
            state_keys,
            promises,
            unfinished,
            woken,
            expired,
            due
        );
        out
    }

    fn of(store: &RedbStorage) -> Result<Self, StorageError> {
        let cells = || (0..SCOPES).flat_map(|s| (0..NAMES.len()).map(move |n| (s, n)));
        Ok(Self {
            invocations: (0..IDS)
                .map(|i| store.invocation(&id(i)))
                .collect::<Result<_, _>>()?,
            derived: (0..IDS)
                .step_by(2)
                .map(|i| {
                    let read = store.derived_invocation_async(&id(i));
                    read.now_or_never().expect("a local read answers at once")
                })
                .collect::<Result<_, _>>()?,
            journals: (0..IDS)
                .map(|i| {
                    let journal = store.journal(&id(i))?;
                    Ok(journal
                        .iter()
                        .map(|(index, entry)| (*index, summary(entry)))
                        .collect())
                })
                .collect::<Result<_, StorageError>>()?,
            state: cells()
                .map(|(s, n)| store.state(&scope(s), NAMES[n]))
                .collect::<Result<_, _>>()?,
            state_keys: (0..SCOPES)
                .map(|s| store.state_keys(&scope(s)))
                .collect::<Result<_, _>>()?,
            promises: cells()
                .map(|(s, n)| store.promise(&scope(s), NAMES[n]))
                .collect::<Result<_, _>>()?,
            unfinished: store.unfinished()?,
            woken: store.woken()?,
            expired: store
                .expired(u64::MAX, 100)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            due: store.due(None, u64::MAX, 10_000)?,
        })
    }
}

/// One step of a model test case.
#[derive(Debug, Clone)]
enum Step {
    /// Batches submitted together (so the writer may group them), then awaited.
    Burst(Vec<Vec<Op>>),
    /// Power loss, then a restart.
    Crash,
    /// A clean close (its final checkpoint), then a restart.
    Reopen,
    /// The n-th sync from now fails.
    FailSync(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS;
    let scope = 0..SCOPES;
    let name = 0..NAMES.len();
    let index = 0..4u32;
    prop_oneof![
        3 => (id.clone(), 0..5u8, any::<u8>())
            .prop_map(|(id, status, seq)| Op::Put { id, status, seq }),
        1 => id.clone().prop_map(|id| Op::Delete { id }),
        4 => (id.clone(), index.clone(), any::<u8>())
            .prop_map(|(id, index, fill)| Op::Journal { id, index, fill }),
        2 => (scope.clone(), name.clone(), any::<u8>())
            .prop_map(|(scope, name, value)| Op::SetState { scope, name, value }),
        1 => (scope.clone(), name.clone()).prop_map(|(scope, name)| Op::ClearState { scope, name }),
        1 => scope.clone().prop_map(|scope| Op::ClearAllState { scope }),
        1 => (scope, name, any::<u8>())
            .prop_map(|(scope, name, value)| Op::Promise { scope, name, value }),
        2 => (id.clone(), index.clone()).prop_map(|(id, index)| Op::Wake { id, index }),
        1 => (id.clone(), prop::collection::vec(index, 1..3))
            .prop_map(|(id, indexes)| Op::ClearWakes { id, indexes }),
        1 => id.prop_map(|id| Op::Cancel { id }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let batch = prop::collection::vec(op(), 1..4);
    prop_oneof![
        8 => prop::collection::vec(batch, 1..4).prop_map(Step::Burst),
        2 => Just(Step::Crash),
        1 => Just(Step::Reopen),
        2 => (1..6u64).prop_map(Step::FailSync),
    ]
}

/// A store on a simulated disk, and the states it may hold.
struct Harness {
    disk: Disk,
    idle: Idle,
    rt: tokio::runtime::Runtime,
    store: Option<RedbStorage>,
    /// The states consistent with everything read so far: more than one when a batch that was
    /// not acknowledged may or may not be durable and no read has told them apart yet.
    models: Vec<Model>,
    /// Batches answered with a failed commit since the store opened: each may or may not be
    /// durable (all of it or none).
    unacked: Vec<Vec<Op>>,
    /// A commit failed: everything is refused until a restart.
    poisoned: bool,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

impl Harness {
    fn new(seed: u64, idle: Idle) -> Result<Self, TestCaseError> {
        let disk = Disk::new(seed);
        let store =
            open_checkpointing(&disk, idle).map_err(|e| fail(format!("first open: {e}")))?;
        Ok(Self {
            disk,
            idle,
            rt: runtime(),
            store: Some(store),
            models: vec![Model::default()],
            unacked: Vec::new(),
            poisoned: false,
        })
    }

    fn store(&self) -> &RedbStorage {
        self.store.as_ref().expect("open between steps")
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Burst(batches) => self.burst(batches),
            Step::Crash => {
                // The crash comes first: it fences off the old store's files, so what its drop
                // still does (the final checkpoint) reaches no disk, as after a real power loss.
                self.disk.crash();
                drop(self.store.take());
                self.restart()
            }
            Step::Reopen => {
                drop(self.store.take());
                self.restart()
            }
            Step::FailSync(n) => {
                self.disk.fail_sync_after(*n);
                Ok(())
            }
        }
    }

    fn burst(&mut self, batches: &[Vec<Op>]) -> Result<(), TestCaseError> {
        let waiters: Vec<_> = batches
            .iter()
            .map(|ops| self.store().submit(batch(ops)))
            .collect();
        let mut failed = self.poisoned;
        let mut refused = self.poisoned;
        for (ops, waiter) in batches.iter().zip(waiters) {
            match self.rt.block_on(waiter) {
                Ok(()) => {
                    prop_assert!(
                        !failed,
                        "a batch was acknowledged after a failed one: {ops:?}"
                    );
                    self.models.iter_mut().for_each(|m| m.apply(ops));
                }
                // A failed commit answers every batch of its group; later ones are refused.
                Err(StorageError::Backend(e)) => {
                    prop_assert!(!refused, "a poisoned store committed again: {e}");
                    failed = true;
                    self.unacked.push(ops.clone());
                }
                // Also after a failed idle checkpoint, which failure() reports.
                Err(StorageError::Poisoned(e)) => {
                    prop_assert!(
                        failed || self.store().failure().borrow().is_some(),
                        "refused without a failure: {e}"
                    );
                    (failed, refused) = (true, true);
                }
                Err(e) => return Err(fail(format!("unexpected {e}"))),
            }
        }
        if failed {
            self.poisoned = true;
            prop_assert!(
                self.store().failure().borrow().is_some(),
                "failure() does not report the failed commit"
            );
            let refused = self.rt.block_on(self.store().submit(batch(&batches[0])));
            prop_assert!(
                matches!(refused, Err(StorageError::Poisoned(_))),
                "a write after a failed commit was not refused: {refused:?}"
            );
            Ok(())
        } else {
            self.check_reads()
        }
    }

    /// Opens the store again; a failure to open may only be an I/O error (a sync failed while
    /// recovering), and then the process restarts once more after a power loss.
    fn restart(&mut self) -> Result<(), TestCaseError> {
        let mut attempts = 0;
        let store = loop {
            match open_checkpointing(&self.disk, self.idle) {
                Ok(store) => break store,
                Err(OpenError::Io { .. }) if attempts < 3 => {
                    attempts += 1;
                    self.disk.crash();
                }
                Err(e) => return Err(fail(format!("reopening failed: {e}"))),
            }
        };
        // Any prefix of the unacknowledged batches may have survived, in order.
        let mut candidates: Vec<Model> = Vec::new();
        for model in &self.models {
            let mut candidate = model.clone();
            candidates.push(candidate.clone());
            for ops in &self.unacked {
                candidate.apply(ops);
                candidates.push(candidate.clone());
            }
        }
        candidates.dedup();
        self.models = candidates;
        self.unacked.clear();
        self.poisoned = false;
        self.store = Some(store);
        self.check_reads()
    }

    /// The store's reads must match one of the states it may hold; the others are dropped.
    fn check_reads(&mut self) -> Result<(), TestCaseError> {
        let view = match View::of(self.store()) {
            Ok(view) => view,
            // Acknowledged batches (durable in the log) that the store failed to apply: reads
            // cannot see them, so they refuse, and so does every write.
            Err(StorageError::Poisoned(_)) if self.store().failure().borrow().is_some() => {
                self.poisoned = true;
                return Ok(());
            }
            Err(e) => return Err(fail(format!("read failed: {e}"))),
        };
        let expected = self.models[0].view();
        self.models.retain(|m| m.view() == view);
        if self.models.is_empty() {
            return Err(fail(format!(
                "the store's reads match no state it may hold; against the first:\n{}",
                view.diff(&expected)
            )));
        }
        Ok(())
    }
}

fn run_case(seed: u64, idle: Idle, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(seed, idle)?;
    for step in steps {
        harness.step(step)?;
    }
    // Every case ends with a power loss: whatever was acknowledged must survive it.
    harness.step(&Step::Crash)
}

#[test]
fn the_store_matches_its_model_across_crashes_and_failed_syncs() {
    let cases = std::env::var("STORE_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let config = Config {
        cases,
        // A failing case is printed with its seed; no regression file is written in the tree.
        failure_persistence: None,
        ..Config::default()
    };
    let idle = prop_oneof![Just(Idle::Never), Just(Idle::Soon)];
    let case = (any::<u64>(), idle, prop::collection::vec(step(), 1..20));
    let result =
        TestRunner::new(config).run(&case, |(seed, idle, steps)| run_case(seed, idle, &steps));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A journal entry of invocation 0.
fn journal_op(index: u32) -> WriteOp {
    WriteOp::put_journal(id(0), index, &entry(index as u8, 8))
}

fn journal_indexes(store: &RedbStorage) -> Vec<u32> {
    let journal = store.journal(&id(0)).unwrap();
    journal.iter().map(|(index, _)| *index).collect()
}

#[test]
fn a_log_record_torn_at_any_byte_is_the_end_of_the_log() {
    let disk = Disk::new(1);
    let rt = runtime();
    let store = open(&disk).unwrap();
    for index in 0..3 {
        rt.block_on(store.submit(vec![journal_op(index)])).unwrap();
    }
    // Record 4 is written and its sync fails: never acknowledged.
    disk.fail_sync_after(1);
    let failed = rt.block_on(store.submit(vec![journal_op(3)]));
    assert!(
        matches!(failed, Err(StorageError::Backend(_))),
        "{failed:?}"
    );
    assert!(store.failure().borrow().is_some());
    let refused = rt.block_on(store.submit(vec![journal_op(4)]));
    assert!(
        matches!(refused, Err(StorageError::Poisoned(_))),
        "{refused:?}"
    );
    let unsynced = disk.unsynced(&log_path());
    assert_eq!(
        unsynced.len(),
        1,
        "the record is the log's one unsynced write"
    );
    let len = unsynced[0];
    for cut in 0..=len {
        let crashed = disk.fork(cut as u64);
        let torn_at = (cut < len).then_some(cut);
        crashed.crash_keeping(
            &log_path(),
            Kept {
                changes: 1,
                torn_at,
            },
        );
        let reopened = open(&crashed).unwrap_or_else(|e| panic!("torn at {cut} of {len}: {e}"));
        // Expected: a torn record is the end of the log, not corruption; the whole one may
        // replay (it was written, just not acknowledged).
        let expected: &[u32] = if cut == len {
            &[0, 1, 2, 3]
        } else {
            &[0, 1, 2]
        };
        assert_eq!(
            journal_indexes(&reopened),
            expected,
            "torn at {cut} of {len}"
        );
        // The log goes on after it: a new write is acknowledged and survives a power loss.
        rt.block_on(reopened.submit(vec![journal_op(9)])).unwrap();
        crashed.crash();
        drop(reopened);
        let again = open(&crashed).unwrap_or_else(|e| panic!("torn at {cut}, again: {e}"));
        assert_eq!(
            journal_indexes(&again).last(),
            Some(&9),
            "torn at {cut} of {len}"
        );
    }
}

#[test]
fn a_checkpoint_lost_at_any_point_recovers_from_the_log() {
    let disk = Disk::new(2);
    let rt = runtime();
    let store = open(&disk).unwrap();
    for index in 0..20 {
        rt.block_on(store.submit(vec![journal_op(index)])).unwrap();
    }
    // The final checkpoint's sync fails: it stays unsynced in the store file.
    disk.fail_sync_after(1);
    store.close();
    assert!(store.failure().borrow().is_some());
    let store_path = store_file(Path::new(DIR));
    let unsynced = disk.unsynced(&store_path);
    assert!(!unsynced.is_empty(), "the checkpoint wrote nothing");
    assert!(disk.unsynced(&log_path()).is_empty(), "the log is synced");
    for changes in 0..=unsynced.len() {
        // Each prefix of the checkpoint's writes, whole or with its last write torn halfway.
        let last = changes.checked_sub(1).map_or(0, |i| unsynced[i]);
        let halfway = (last > 1).then_some(Some(last / 2));
        for torn_at in std::iter::once(None).chain(halfway) {
            let crashed = disk.fork(changes as u64);
            crashed.crash_keeping(&store_path, Kept { changes, torn_at });
            let reopened = open(&crashed)
                .unwrap_or_else(|e| panic!("{changes} writes kept, torn at {torn_at:?}: {e}"));
            assert_eq!(
                journal_indexes(&reopened),
                (0..20).collect::<Vec<_>>(),
                "{changes} of {} writes kept, torn at {torn_at:?}",
                unsynced.len()
            );
        }
    }
}

/// Entry `index` of invocation 0 in the full-log tests: entries 2 and 3 are big.
fn full_log_op(index: u32) -> WriteOp {
    let len = if matches!(index, 2 | 3) { BIG } else { 8 };
    WriteOp::put_journal(id(0), index, &entry(index as u8, len))
}

/// The journal of invocation 0 is entries `0..n` of [`full_log_op`], whole.
fn assert_full_log_entries(store: &RedbStorage, n: u32, context: &str) {
    let found: Vec<_> = (store.journal(&id(0)).unwrap().iter())
        .map(|(index, entry)| (*index, summary(entry)))
        .collect();
    let expected: Vec<_> = (0..n)
        .map(|index| match full_log_op(index) {
            WriteOp::PutJournal { encoded, .. } => {
                (index, summary(&records::decode(&encoded).unwrap()))
            }
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(found, expected, "{context}");
}

/// A store whose log holds entries 0 to 2, with room for no other big entry.
fn store_with_a_full_log(seed: u64) -> (Disk, tokio::runtime::Runtime, RedbStorage) {
    let disk = Disk::new(seed);
    let rt = runtime();
    let store = open(&disk).unwrap();
    for index in 0..3 {
        rt.block_on(store.submit(vec![full_log_op(index)])).unwrap();
    }
    (disk, rt, store)
}

/// Polls `done` every millisecond; panics with `what` after 30 s.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_checkpoint_of_a_full_log_lost_in_a_crash_keeps_every_acknowledged_write() {
    let (disk, rt, store) = store_with_a_full_log(3);
    // Entry 3 does not fit in the first log segment: it goes to the other one and is
    // acknowledged, while the store is checkpointed; that checkpoint's sync fails.
    let stalled = disk.stall_checkpoints();
    rt.block_on(store.submit(vec![full_log_op(3)])).unwrap();
    disk.fail_sync_after(1);
    drop(stalled);
    wait_for("the failed checkpoint was not reported", || {
        store.failure().borrow().is_some()
    });
    assert_eq!(store.writer_stats().checkpoints, 0);
    let refused = rt.block_on(store.submit(vec![full_log_op(4)]));
    assert!(
        matches!(refused, Err(StorageError::Poisoned(_))),
        "{refused:?}"
    );
    let store_path = store_file(Path::new(DIR));
    let unsynced = disk.unsynced(&store_path);
    // A debug build replays 600 KiB slowly: a few crash points, not every one.
    let n = unsynced.len();
    for (changes, torn_at) in [(0, None), (n / 3, None), (n / 2, Some(1)), (n, None)] {
        let crashed = disk.fork(changes as u64);
        crashed.crash_keeping(&store_path, Kept { changes, torn_at });
        let context = format!("{changes} of {n} writes kept, torn at {torn_at:?}");
        let reopened = open(&crashed).unwrap_or_else(|e| panic!("{context}: {e}"));
        // Expected: entries 0 to 3, all acknowledged, from the store and both segments.
        assert_full_log_entries(&reopened, 4, &context);
    }
}

/// `read` on a thread of its own, answered within 30 s (a read that waits for a stalled
/// checkpoint would never answer).
fn read_soon<T: Send + 'static>(
    what: &str,
    read: impl FnOnce() -> T + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let what = what.to_owned();
    std::thread::Builder::new()
        .name(what)
        .spawn(move || {
            let _ = tx.send(read());
        })
        .expect("a reader thread");
    rx
}

/// While a checkpoint is stalled, the groups acknowledged meanwhile are kept aside, not yet in
/// redb. A read of a record or a state value one of them wrote gets that write at once, and so
/// does one of a key none of them wrote (redb is current for it); a read of a record changed
/// in place (a cancellation request) and a read of anything else (a journal) wait, and see
/// every write once the checkpoint ends.
#[test]
fn reads_of_writes_kept_aside_during_a_checkpoint_answer_without_waiting_for_it() {
    let (disk, rt, store) = store_with_a_full_log(5);
    let store = std::sync::Arc::new(store);
    rt.block_on(store.submit(vec![
        WriteOp::put_invocation(id(1), &record(1, 0, 1)),
        WriteOp::put_invocation(id(2), &record(2, 3, 2)),
        WriteOp::SetState {
            scope: scope(1),
            name: "y".into(),
            value: b"before".to_vec(),
        },
    ]))
    .unwrap();
    let stalled = disk.stall_checkpoints();
    // Entry 3 fills the first segment: a checkpoint starts and stalls; what follows is kept
    // aside.
    rt.block_on(store.submit(vec![full_log_op(3)])).unwrap();
    rt.block_on(store.submit(vec![
        WriteOp::put_invocation(id(1), &record(1, 4, 9)),
        WriteOp::SetState {
            scope: scope(0),
            name: "x".into(),
            value: b"new".to_vec(),
        },
        WriteOp::ClearAllState { scope: scope(1) },
        WriteOp::RequestCancel { id: id(2) },
    ]))
    .unwrap();
    let soon = std::time::Duration::from_secs(30);
    let s = store.clone();
    let record1 = read_soon("record", move || s.invocation(&id(1)).unwrap());
    let found = record1.recv_timeout(soon).expect("read without waiting");
    assert_eq!(found.map(|r| r.input), Some(vec![9]));
    let s = store.clone();
    let states = read_soon("state", move || {
        (
            s.state(&scope(0), "x").unwrap(),
            s.state(&scope(0), "z").unwrap(),
            s.state(&scope(1), "y").unwrap(),
        )
    });
    let found = states.recv_timeout(soon).expect("read without waiting");
    assert_eq!(found, (Some(b"new".to_vec()), None, None));
    let s = store.clone();
    let untouched = read_soon("untouched", move || s.invocation(&id(0)).unwrap());
    assert!(
        untouched
            .recv_timeout(soon)
            .expect("read at once")
            .is_none()
    );
    // These wait for the checkpoint.
    let s = store.clone();
    let cancelled = read_soon("cancelled", move || s.invocation(&id(2)).unwrap());
    let s = store.clone();
    let journal = read_soon("journal", move || s.journal(&id(0)).unwrap().len());
    drop(stalled);
    let found = cancelled
        .recv_timeout(soon)
        .expect("read after the checkpoint");
    assert!(found.expect("stored").cancel_requested);
    assert_eq!(
        journal
            .recv_timeout(soon)
            .expect("read after the checkpoint"),
        4
    );
}

#[test]
fn writes_after_a_checkpoint_of_a_full_log_survive_a_crash() {
    let (disk, rt, store) = store_with_a_full_log(4);
    // Entry 3 goes to the other log segment while the first is checkpointed; once that
    // checkpoint is durable, the first segment may be written again.
    rt.block_on(store.submit(vec![full_log_op(3)])).unwrap();
    wait_for("the checkpoint never ended", || {
        store.writer_stats().checkpoints == 1
    });
    for index in 4..6 {
        rt.block_on(store.submit(vec![full_log_op(index)])).unwrap();
    }
    for seed in 0..4 {
        let crashed = disk.fork(seed);
        crashed.crash();
        let reopened = open(&crashed).unwrap_or_else(|e| panic!("crash {seed}: {e}"));
        assert_full_log_entries(&reopened, 6, &format!("crash {seed}"));
    }
}

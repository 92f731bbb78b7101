//! What the PostgreSQL backend adds to the conformance suite: the schema's versions, a
//! database shared by processes, group commit, and a lost connection stopping the writer.

use std::sync::Arc;

use super::combined::{Part, shape_of, statement};
use super::{PostgresOptions, PostgresStorage};
use crate::ids::InvocationId;
use crate::storage::records::{InvocationRecord, Status};
use crate::storage::{OpenError, Partitions, StateScope, Storage, StorageError, WriteOp};
use crate::testing::PostgresCluster;

fn cluster() -> &'static PostgresCluster {
    PostgresCluster::shared().expect("a private PostgreSQL cluster")
}

fn open(url: &str, partitions: u32) -> Result<PostgresStorage, OpenError> {
    let options = PostgresOptions {
        partitions,
        ..Default::default()
    };
    PostgresStorage::open(url, &options)
}

/// A second store on the database at `url` (a lease of 1 s), opened off the test's thread: it
/// waits for its first lease round.
async fn open_beside(url: &str) -> PostgresStorage {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || PostgresStorage::open(&url, &with_lease(1_000, None)))
        .await
        .unwrap()
        .unwrap()
}

fn scope() -> StateScope {
    StateScope {
        service: "Counter".into(),
        key: "a".into(),
    }
}

fn set(name: &str, value: &[u8]) -> WriteOp {
    WriteOp::SetState {
        scope: scope(),
        name: name.into(),
        value: value.to_vec(),
    }
}

#[tokio::test]
async fn what_one_process_committed_the_next_one_reads() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let first = open(&url, 8).unwrap();
    let id = InvocationId::random(3);
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    first
        .submit(vec![
            WriteOp::put_new_invocation(id, &record),
            set("n", b"1"),
        ])
        .await
        .unwrap();
    let secret = first.secret();
    drop(first);

    // The partition count and secret are the deployment's, fixed by the first process.
    let next = open(&url, 64).unwrap();
    assert_eq!(next.partitions(), 8);
    assert_eq!(next.secret(), secret);
    assert_eq!(next.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
    assert_eq!(next.invocation(&id).unwrap().unwrap().target, record.target);
}

/// Waits (10 s at most) until `until` holds of the stores' sets of partitions, telling each
/// store, as its engine would, that the partitions it offered back are left.
async fn settled(
    stores: &[&PostgresStorage],
    until: impl Fn(&[Partitions]) -> bool,
) -> Vec<Partitions> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sets: Vec<Partitions> = stores.iter().map(|s| s.owned().borrow().clone()).collect();
        if until(&sets) {
            return sets;
        }
        let shown: Vec<Vec<u32>> = sets.iter().map(|s| s.iter().collect()).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "not settled within 10 s: {shown:?}"
        );
        for (store, set) in stores.iter().zip(&sets) {
            store.left(set);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every partition in exactly one of `sets`, and each set `share` or `share - 1` large.
fn spread(sets: &[Partitions], share: usize) -> bool {
    let count = sets[0].count();
    let each_once = (0..count).all(|p| sets.iter().filter(|s| s.contains(p)).count() == 1);
    each_once
        && sets
            .iter()
            .all(|s| s.len() == share || s.len() + 1 == share)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_share_the_partitions_and_a_closed_ones_are_taken_at_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let options = PostgresOptions {
                    partitions: 8,
                    owner_wait: Some(std::time::Duration::from_millis(500)),
                    lease_ttl: std::time::Duration::from_secs(3),
                    ..Default::default()
                };
                PostgresStorage::open(&url, &options)
            })
        })
        .collect();
    let mut running: Vec<_> = opened
        .into_iter()
        .map(|opened| opened.join().unwrap().expect("every process runs"))
        .collect();
    let migrated = cluster()
        .query(&url, "SELECT count(*)::text FROM restate_schema_history")
        .unwrap();
    assert_eq!(
        migrated,
        vec![vec![Some(super::schema::SCHEMA_VERSION.to_string())]],
        "each migration applied once"
    );
    // The partitions spread (those offered back released once left), and a process that
    // closes leaves its partitions to the others: its session is gone, they are free at once.
    let stores: Vec<&PostgresStorage> = running.iter().collect();
    settled(&stores, |sets| spread(sets, 2)).await;
    let secret = running[0].secret();
    let closed = running.remove(0);
    drop(closed);
    let stores: Vec<&PostgresStorage> = running.iter().collect();
    settled(&stores, |sets| spread(sets, 3)).await;
    // Its membership expires and its row goes: the table keeps the processes that run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let members = cluster()
            .query(&url, "SELECT count(*)::text FROM restate_members")
            .unwrap();
        if members == vec![vec![Some("3".to_owned())]] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "members: {members:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(open(&url, 4).unwrap().secret(), secret);
}

/// A partition offered back (another process joined) leaves the set at once but is released
/// only once the engine says it acted on that set or a later one: a late word about an
/// earlier set, which the engine sent before it saw the offer, releases nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_offered_back_are_released_only_once_the_engine_saw_them_go() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let options = with_lease(1_000, None);
    let first = PostgresStorage::open(&url, &options).unwrap();
    let before = first.owned().borrow().clone();
    assert_eq!(before.len(), 4);
    let second = open_beside(&url).await;
    let mut owned = first.owned();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        owned.wait_for(|set| set.len() == 2),
    )
    .await
    .expect("two offered back at the next renewal")
    .unwrap();
    let after = owned.borrow().clone();
    assert!(after.version() > before.version());
    // A word about a set before the offer: for all it says, none runs here, yet nothing goes.
    first.left(&Partitions::none(4).numbered(before.version()));
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert!(second.owned().borrow().is_empty(), "released too early");
    let held = cluster()
        .query(
            &url,
            "SELECT count(*)::text FROM restate_partitions WHERE expires_at > clock_timestamp()",
        )
        .unwrap();
    assert_eq!(
        held,
        vec![vec![Some("4".to_owned())]],
        "still leased by the first"
    );
    // The word about the set without them: released, and taken by the second process.
    first.left(&after);
    let mut taken = second.owned();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        taken.wait_for(|set| set.len() == 2),
    )
    .await
    .expect("taken once released")
    .unwrap();
    let theirs = taken.borrow().clone();
    assert!(
        theirs.iter().all(|p| !after.contains(p)),
        "a partition run twice"
    );
    assert!(first.failure().borrow().is_none() && second.failure().borrow().is_none());
}

/// Four processes of one deployment with a short lease: the partitions spread evenly (those a
/// process offers back are released once its engine left them), each process's scans of the
/// inbox and of due times see its own partitions only, a write for a partition that moved is
/// refused without stopping the store, and once one process stops for good, the others share
/// its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_evenly_and_follow_the_processes_that_come_and_go() {
    use crate::storage::InboxMessage;
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let options = PostgresOptions {
        partitions: 8,
        lease_ttl: std::time::Duration::from_millis(1_500),
        ..Default::default()
    };
    let first = PostgresStorage::open(&url, &options).unwrap();
    assert_eq!(
        first.owned().borrow().len(),
        8,
        "alone, one process runs all"
    );
    let mut others = Vec::new();
    for _ in 0..3 {
        let (url, options) = (url.clone(), options.clone());
        others.push(
            tokio::task::spawn_blocking(move || PostgresStorage::open(&url, &options))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mut all = vec![&first];
    all.extend(others.iter());
    let sets = settled(&all, |sets| spread(sets, 2)).await;

    // Work in every partition: each process sees the inbox messages and due times of its own.
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    let ids: Vec<InvocationId> = (0..8).map(InvocationId::random).collect();
    for id in &ids {
        first
            .forward(*id, InboxMessage::Invoke(Box::new(record.clone())))
            .await
            .unwrap();
    }
    for (store, set) in all.iter().zip(&sets) {
        let seen: Vec<u64> = store
            .inbox(100, usize::MAX)
            .unwrap()
            .iter()
            .map(|m| m.id.partition_key())
            .collect();
        let mut expected: Vec<u64> = set.iter().map(u64::from).collect();
        let mut got = seen.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "a process's inbox is its partitions'");
    }
    let sleeping = InvocationRecord::for_test("S", None, Status::Scheduled { at_ms: 5 });
    for (store, set) in all.iter().zip(&sets) {
        let mine = set.iter().next().unwrap();
        store
            .submit(vec![WriteOp::put_new_invocation(
                ids[mine as usize],
                &sleeping,
            )])
            .await
            .unwrap();
    }
    for (store, set) in all.iter().zip(&sets) {
        let due = store.due(None, u64::MAX, 100).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert!(set.holds(&due[0].1));
    }

    // A write for a partition another process runs is refused, and the store goes on.
    let (mine, theirs) = (
        sets[0].iter().next().unwrap(),
        sets[1].iter().next().unwrap(),
    );
    let refused = first
        .submit(vec![WriteOp::put_new_invocation(
            ids[theirs as usize],
            &record,
        )])
        .await;
    assert!(
        matches!(&refused, Err(StorageError::Backend(m)) if m.contains("not this process's")),
        "{refused:?}"
    );
    assert!(first.failure().borrow().is_none());
    first
        .submit(vec![WriteOp::put_invocation(ids[mine as usize], &record)])
        .await
        .unwrap();

    // One process stops for good: the other three share its partitions.
    let gone = others.pop().unwrap();
    drop(gone);
    let all: Vec<&PostgresStorage> = std::iter::once(&first).chain(others.iter()).collect();
    settled(&all, |sets| spread(sets, 3)).await;
    assert!(first.failure().borrow().is_none());
}

#[tokio::test]
async fn a_schema_only_a_newer_binary_can_run_is_refused_by_name() {
    use super::schema::SCHEMA_VERSION;
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    drop(open(&url, 4).unwrap());
    // A newer binary added the next migration, an expansion: this one still runs.
    let (expand, contract) = (SCHEMA_VERSION + 1, SCHEMA_VERSION + 2);
    cluster()
        .execute(
            &url,
            &format!(
                "INSERT INTO restate_schema_history (version, name, applied_on, checksum) \
                 VALUES ({expand}, 'expand', '2026-11-30T12:00:00Z', '1')"
            ),
        )
        .unwrap();
    drop(open(&url, 4).expect("an expanded schema still runs"));
    // Then the one after contracted the schema: binaries before it must not run.
    cluster()
        .execute(
            &url,
            &format!(
                "UPDATE restate_meta SET value = int4send({contract}) \
                 WHERE name = 'oldest_binary_schema'"
            ),
        )
        .unwrap();
    match open(&url, 4) {
        Err(OpenError::Incompatible { path, reason }) => {
            assert!(
                path.starts_with("postgres://restate:***@127.0.0.1:"),
                "{path}"
            );
            assert!(
                reason.contains(&format!("schema version {contract}")),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a schema newer than the binary was accepted"),
    }
}

/// A database that applied a migration this binary carries in another form (a development
/// build's, changed after it was applied) is refused by name, at a start and by a replay
/// check's read-only open alike (found from outside: the check passed a deploy whose start
/// then failed).
#[tokio::test]
async fn a_migration_applied_in_another_form_is_refused_by_name_also_by_a_check() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    drop(open(&url, 4).unwrap());
    cluster()
        .execute(
            &url,
            "UPDATE restate_schema_history SET checksum = '1' WHERE version = 1",
        )
        .unwrap();
    let read_only = PostgresOptions {
        partitions: 4,
        read_only: true,
        ..Default::default()
    };
    for opened in [open(&url, 4), PostgresStorage::open(&url, &read_only)] {
        match opened {
            Err(OpenError::Incompatible { reason, .. }) => {
                assert!(reason.contains("V1__initial"), "{reason}");
                assert!(reason.contains("cannot run on this database"), "{reason}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a database with a changed migration was opened"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_that_names_it() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let port = cluster().port() + 1;
    let url = format!("postgres://restate:hunter2@127.0.0.1:{port}/nowhere?connect_timeout=2");
    match open(&url, 4) {
        Err(OpenError::Io { path, .. }) => {
            assert!(path.contains(&format!(":{port}/nowhere")), "{path}");
            assert!(
                !path.contains("hunter2"),
                "the password is not shown: {path}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a database that is not there"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_transactions_and_all_land_in_order() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store: Arc<dyn Storage> = Arc::new(open(&url, 4).unwrap());
    let waiters: Vec<_> = (0..500)
        .map(|i| store.submit(vec![set("last", i.to_string().as_bytes())]))
        .collect();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(
        store.state(&scope(), "last").unwrap(),
        Some(b"499".to_vec())
    );
    let stats = store.writer_stats();
    assert_eq!(stats.batches, 500);
    assert!(
        stats.commits < stats.batches,
        "batches queued together commit together: {stats:?}"
    );
    assert_eq!(store.unanswered(), 0);
}

#[tokio::test]
async fn a_lost_connection_stops_the_store_at_once_and_nothing_after_is_acknowledged() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store = open(&url, 4).unwrap();
    store.submit(vec![set("n", b"1")]).await.unwrap();
    let database = url.rsplit('/').next().unwrap();
    cluster()
        .execute(
            &url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap();
    // The writer's session is gone (another process may take over): the store stops at once,
    // idle as it is, not at its next commit.
    let mut failure = store.failure();
    let stopped = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        failure.wait_for(Option::is_some),
    )
    .await;
    let reason = stopped.expect("stopped").expect("watch open").clone();
    // Seen by the connection, or by a lease round that was talking to the server then.
    let reason = reason.unwrap();
    assert!(
        reason.contains("connection to PostgreSQL ended")
            || reason.contains("terminating connection due to administrator command"),
        "{reason}"
    );
    let after = store.submit(vec![set("n", b"3")]).await;
    assert!(matches!(after, Err(StorageError::Poisoned(_))), "{after:?}");
    // Nothing of the failed batches landed.
    let reopened = open(&url, 4).unwrap();
    assert_eq!(reopened.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
}

/// A test's kill switch ends a store as a SIGKILL ends its process: right after the n-th
/// commit nothing more commits, and the next store takes every partition over at once (the
/// old session is cut off, not left to its lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_the_writes_at_once_and_the_next_store_takes_over_at_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let switch = super::KillSwitch::default();
    let options = PostgresOptions {
        partitions: 4,
        ..Default::default()
    };
    let store = switch.open(&url, &options).unwrap();
    switch.kill_after_commits(2);
    store.submit(vec![set("n", b"1")]).await.unwrap();
    assert_eq!(switch.kills(), 0);
    store.submit(vec![set("n", b"2")]).await.unwrap();
    assert_eq!(switch.kills(), 1, "killed right after the 2nd commit");
    let after = store.submit(vec![set("n", b"3")]).await;
    assert!(matches!(after, Err(StorageError::Poisoned(_))), "{after:?}");
    assert!(store.failure().borrow().is_some());

    // The old store is not dropped (a killed process's handle lingers): its session is cut.
    let started = std::time::Instant::now();
    let next = switch.open(&url, &options).unwrap();
    settled(&[&next], |sets| sets[0].len() == 4).await;
    assert!(started.elapsed() < options.lease_ttl, "not left to expire");
    assert_eq!(next.state(&scope(), "n").unwrap(), Some(b"2".to_vec()));

    // A plain kill (a restart) ends the next one the same way.
    switch.kill();
    let refused = next.submit(vec![set("n", b"4")]).await;
    assert!(
        matches!(refused, Err(StorageError::Poisoned(_))),
        "{refused:?}"
    );
    let last = switch.open(&url, &options).unwrap();
    settled(&[&last], |sets| sets[0].len() == 4).await;
    assert_eq!(last.state(&scope(), "n").unwrap(), Some(b"2".to_vec()));
}

/// Random groups of operations on a few rows, the same on PostgreSQL (batches queued at once,
/// so that they fold into shared transactions) and in memory (one batch at a time): every
/// read agrees afterwards. Seeded: a failure names its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_groups_leave_what_the_operations_one_by_one_leave() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    use rand::{Rng, SeedableRng};

    use crate::storage::records::{Outcome, Status};
    use crate::storage::{CANCEL_WAKE, MemoryStore};

    let ids: Vec<InvocationId> = (0..4).map(InvocationId::random).collect();
    let scopes: Vec<StateScope> = ["a", "b", "c"]
        .iter()
        .map(|key| StateScope {
            service: "Flow".into(),
            key: (*key).into(),
        })
        .collect();
    let names = ["x", "y", "z"];
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let op = |rng: &mut rand::rngs::StdRng| -> WriteOp {
            let id = ids[rng.random_range(0..ids.len())];
            let other = ids[rng.random_range(0..ids.len())];
            let scope = scopes[rng.random_range(0..scopes.len())].clone();
            let name = names[rng.random_range(0..names.len())].to_owned();
            let index = rng.random_range(0..3u32);
            match rng.random_range(0..17) {
                0 | 1 => {
                    let status = match rng.random_range(0..4) {
                        0 => Status::Runnable,
                        1 => Status::Scheduled {
                            at_ms: rng.random_range(0..100),
                        },
                        2 => Status::Suspended {
                            wake_at_ms: Some(rng.random_range(0..100)),
                        },
                        _ => Status::Completed {
                            outcome: Outcome::Success(b"1".to_vec()),
                            completed_at_ms: 1,
                            expires_at_ms: rng.random_range(0..100),
                        },
                    };
                    let record = InvocationRecord::for_test("Flow", Some("a"), status);
                    WriteOp::put_invocation(id, &record)
                }
                2 => WriteOp::PutJournal {
                    id,
                    index,
                    encoded: crate::storage::records::encode(&crate::storage::JournalEntry::Run {
                        name: name.clone(),
                        outcome: Outcome::Success(vec![index as u8]),
                    }),
                },
                3 => WriteOp::DeleteInvocation { id },
                4 => WriteOp::SetState {
                    scope,
                    name,
                    value: vec![rng.random()],
                },
                5 => WriteOp::ClearState { scope, name },
                6 => WriteOp::ClearAllState { scope },
                7 => WriteOp::PutPromise {
                    scope,
                    name,
                    encoded: crate::storage::records::encode(&Outcome::Success(vec![1])),
                },
                8 => WriteOp::ClearPromises { scope },
                9 => WriteOp::AddPromiseWaiter {
                    scope,
                    name,
                    id,
                    index,
                },
                10 => WriteOp::ClearPromiseWaiters { scope, name },
                11 => WriteOp::Wake {
                    id,
                    index: if index == 2 { CANCEL_WAKE } else { index },
                },
                12 => WriteOp::ClearWakes {
                    id,
                    indexes: vec![index, CANCEL_WAKE],
                },
                13 => WriteOp::AddResultWaiter {
                    source: id,
                    waiter: other,
                    index,
                    call: rng.random(),
                },
                14 => WriteOp::ClearResultWaiters { source: id },
                _ => WriteOp::RequestCancel { id },
            }
        };
        let batches: Vec<Vec<WriteOp>> = (0..60)
            .map(|_| {
                let n = rng.random_range(1..6);
                (0..n).map(|_| op(&mut rng)).collect()
            })
            .collect();

        let url = cluster().fresh_database().unwrap();
        let postgres: Arc<dyn Storage> = Arc::new(open(&url, 4).unwrap());
        let memory: Arc<dyn Storage> = Arc::new(MemoryStore::default().open(4));
        let queued: Vec<_> = batches.iter().map(|b| postgres.submit(b.clone())).collect();
        for (batch, waiter) in batches.iter().zip(queued) {
            waiter.await.unwrap();
            memory.submit(batch.clone()).await.unwrap();
        }
        assert!(
            postgres.writer_stats().commits < batches.len() as u64,
            "seed {seed}: the batches were not grouped"
        );

        let same = |what: &str, a: String, b: String| {
            assert_eq!(a, b, "seed {seed}: {what} differs (PostgreSQL, memory)");
        };
        for id in &ids {
            let record = |s: &Arc<dyn Storage>| {
                s.invocation(id)
                    .unwrap()
                    .map(|r| (format!("{:?}", r.status), r.cancel_requested))
            };
            same(
                "record",
                format!("{:?}", record(&postgres)),
                format!("{:?}", record(&memory)),
            );
            same(
                "journal",
                format!("{:?}", postgres.journal(id).unwrap()),
                format!("{:?}", memory.journal(id).unwrap()),
            );
        }
        for scope in &scopes {
            let keys = postgres.state_keys(scope).unwrap();
            same(
                "state keys",
                format!("{keys:?}"),
                format!("{:?}", memory.state_keys(scope).unwrap()),
            );
            for name in names {
                same(
                    "state",
                    format!("{:?}", postgres.state(scope, name).unwrap()),
                    format!("{:?}", memory.state(scope, name).unwrap()),
                );
                same(
                    "promise",
                    format!("{:?}", postgres.promise(scope, name).unwrap()),
                    format!("{:?}", memory.promise(scope, name).unwrap()),
                );
                same(
                    "promise waiters",
                    format!("{:?}", postgres.promise_waiters(scope, name).unwrap()),
                    format!("{:?}", memory.promise_waiters(scope, name).unwrap()),
                );
            }
        }
        let unfinished = |s: &Arc<dyn Storage>| {
            let mut ids: Vec<_> = s
                .unfinished()
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort_by_key(|id| id.storage_key());
            ids
        };
        same(
            "unfinished",
            format!("{:?}", unfinished(&postgres)),
            format!("{:?}", unfinished(&memory)),
        );
        same(
            "woken",
            format!("{:?}", postgres.woken().unwrap()),
            format!("{:?}", memory.woken().unwrap()),
        );
        same(
            "result waiters",
            format!("{:?}", postgres.result_waiters(None).unwrap()),
            format!("{:?}", memory.result_waiters(None).unwrap()),
        );
        same(
            "due",
            format!("{:?}", postgres.due(None, u64::MAX, usize::MAX).unwrap()),
            format!("{:?}", memory.due(None, u64::MAX, usize::MAX).unwrap()),
        );
    }
}

fn with_lease(ttl_ms: u64, wait_ms: Option<u64>) -> PostgresOptions {
    PostgresOptions {
        partitions: 4,
        lease_ttl: std::time::Duration::from_millis(ttl_ms),
        owner_wait: wait_ms.map(std::time::Duration::from_millis),
        ..Default::default()
    }
}

/// The partition the test scope's state is in, of 4.
fn scope_partition() -> i32 {
    Partitions::all(4)
        .partition_of(crate::ids::partition_key_of(&scope().service, &scope().key))
        .unwrap() as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_owner_keeps_its_leases_and_drops_one_taken_over_alone() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(1_000, None)).unwrap();
    owner.submit(vec![set("n", b"1")]).await.unwrap();
    // Idle for three lease lengths: the writer renews its leases at the epochs it took.
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    let held = cluster()
        .query(
            &url,
            "SELECT count(*)::text FROM restate_partitions \
             WHERE epoch = 1 AND expires_at > clock_timestamp() AND owner_pid IS NOT NULL",
        )
        .unwrap();
    assert_eq!(
        held,
        vec![vec![Some("4".to_owned())]],
        "every lease renewed"
    );
    assert_eq!(owner.owned().borrow().len(), 4);
    assert!(owner.failure().borrow().is_none());

    // Another process takes the state's partition over (as after this one was paused past
    // its lease): the write is refused (by the database's fence, or by the writer once a
    // renewal saw the epoch move), and the store drops that partition only.
    let partition = scope_partition();
    cluster()
        .execute(
            &url,
            &format!(
                "UPDATE restate_partitions SET epoch = epoch + 1 WHERE partition = {partition}"
            ),
        )
        .unwrap();
    let fenced = owner.submit(vec![set("n", b"2")]).await;
    assert!(fenced.is_err(), "a fenced process committed: {fenced:?}");
    assert!(owner.failure().borrow().is_none(), "the store stopped");
    let after = owner.owned().borrow().clone();
    assert!(
        !after.contains(partition as u32),
        "still runs the lost partition"
    );
    assert_eq!(after.len(), 3, "the others stay");
    // The other partitions go on committing.
    let elsewhere = scope_in((partition as u32 + 1) % 4);
    let other = WriteOp::SetState {
        scope: elsewhere.clone(),
        name: "n".into(),
        value: b"3".to_vec(),
    };
    owner.submit(vec![other]).await.unwrap();
    assert_eq!(owner.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
    // Its lease expires (its taker is gone), yet it is not taken again before the engine
    // says it left it: a task of the old run could still write it, at the new epoch. Rounds
    // run every third of a lease: three of them pass after the expiry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = format!(
        "SELECT (expires_at < clock_timestamp())::text FROM restate_partitions \
         WHERE partition = {partition}"
    );
    while cluster().query(&url, &expired).unwrap() != vec![vec![Some("true".to_owned())]] {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let epoch_of =
        format!("SELECT epoch::text FROM restate_partitions WHERE partition = {partition}");
    assert_eq!(
        cluster().query(&url, &epoch_of).unwrap(),
        vec![vec![Some("2".to_owned())]],
        "taken again before the engine left it"
    );
    assert!(!owner.owned().borrow().contains(partition as u32));
    // Once its engine said it left the partition, and the lease taken from it expired (its
    // taker is gone), the process takes it again, at a newer epoch.
    settled(&[&owner], |sets| sets[0].len() == 4).await;
    owner.submit(vec![set("n", b"4")]).await.unwrap();
    let epoch = cluster().query(&url, &epoch_of).unwrap();
    assert_eq!(epoch, vec![vec![Some("3".to_owned())]]);
    drop(owner);
    let next = open(&url, 4).unwrap();
    assert_eq!(next.state(&scope(), "n").unwrap(), Some(b"4".to_vec()));
    assert_eq!(next.state(&elsewhere, "n").unwrap(), Some(b"3".to_vec()));
}

/// A state scope of the counter service in `partition` of 4.
fn scope_in(partition: u32) -> StateScope {
    (0..)
        .map(|n| StateScope {
            service: "Counter".into(),
            key: format!("k{n}"),
        })
        .find(|s| {
            let key = crate::ids::partition_key_of(&s.service, &s.key);
            Partitions::all(4).partition_of(key) == Some(partition)
        })
        .unwrap()
}

fn set_in(partition: u32, value: &[u8]) -> WriteOp {
    WriteOp::SetState {
        scope: scope_in(partition),
        name: "n".into(),
        value: value.to_vec(),
    }
}

fn partition_key_in(partition: u32) -> u64 {
    let scope = scope_in(partition);
    crate::ids::partition_key_of(&scope.service, &scope.key)
}

/// A write refused for a partition another process took takes the other partitions it
/// wrote out of this process's hands at once (a later write of their invocations must not
/// land without the refused one): refused by the fence, or refused before it for naming a
/// partition lost already. Their writes and barriers are refused from then on; the rest goes
/// on (what shared the refused transaction commits again), and once the engine says it left
/// them they are released and taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_a_refused_write_wrote_are_frozen_and_offered_back() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(1_000, None)).unwrap();
    owner.submit(vec![set_in(0, b"1")]).await.unwrap();
    assert_eq!(owner.owned().borrow().len(), 4);
    // Partition 0 taken, unannounced: a write of partitions 0 and 1 is refused by the fence.
    cluster()
        .execute(
            &url,
            "UPDATE restate_partitions SET epoch = epoch + 1 WHERE partition = 0",
        )
        .unwrap();
    // Queued together, most likely in one transaction: the write of partitions 0 and 1 is
    // refused; what came before it (partition 1 too) and beside it commit again without it.
    let before = owner.submit(vec![set_in(1, b"2")]);
    let both = owner.submit(vec![set_in(0, b"2"), set_in(1, b"3")]);
    let beside = owner.submit(vec![set_in(3, b"2")]);
    let both = both.await;
    assert!(both.is_err(), "{both:?}");
    before.await.unwrap();
    beside.await.unwrap();
    assert_eq!(owner.state(&scope_in(1), "n").unwrap(), Some(b"2".to_vec()));
    assert_eq!(
        *owner.owned().borrow(),
        Partitions::of(4, [2, 3]),
        "the lost partition and the one written with it left the set"
    );
    assert!(owner.submit(vec![set_in(1, b"4")]).await.is_err());
    assert!(owner.barrier(partition_key_in(1)).await.is_err());
    // A write naming the lost partition and another one is refused before the fence, and
    // takes that other one along.
    let named = owner.submit(vec![set_in(0, b"4"), set_in(2, b"4")]).await;
    assert!(named.is_err(), "{named:?}");
    assert_eq!(*owner.owned().borrow(), Partitions::of(4, [3]));
    assert!(owner.barrier(partition_key_in(2)).await.is_err());
    // The rest goes on.
    owner.barrier(partition_key_in(3)).await.unwrap();
    owner.submit(vec![set_in(3, b"5")]).await.unwrap();
    assert!(owner.failure().borrow().is_none(), "the store stopped");
    let held = cluster()
        .query(
            &url,
            "SELECT partition::text FROM restate_partitions WHERE partition IN (1, 2) \
             AND owner_pid IS NOT NULL AND expires_at > clock_timestamp() ORDER BY 1",
        )
        .unwrap();
    assert_eq!(
        held,
        vec![vec![Some("1".to_owned())], vec![Some("2".to_owned())]],
        "frozen ones stay leased until the engine left them"
    );
    // Once the engine left them, they are released and taken again (the lost one once its
    // lease, renewed by nobody, expired), and written again.
    settled(&[&owner], |sets| sets[0].len() == 4).await;
    owner
        .submit(vec![set_in(0, b"6"), set_in(1, b"6"), set_in(2, b"6")])
        .await
        .unwrap();
    assert_eq!(owner.state(&scope_in(1), "n").unwrap(), Some(b"6".to_vec()));
    assert_eq!(owner.state(&scope_in(3), "n").unwrap(), Some(b"5".to_vec()));
}

/// A binary of schema 2 (a rolling deploy) waits while processes of this schema hold the
/// database, and one that takes it over anyway fences every partition's holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_binary_waits_for_the_partitioned_processes_and_one_taking_over_fences_them() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    owner.submit(vec![set("n", b"1")]).await.unwrap();
    // What a schema 2 binary's claim finds: a live lease, renewed by the partitioned ones.
    let held = cluster()
        .query(
            &url,
            "SELECT (expires_at > clock_timestamp() AND epoch = joint_epoch \
             AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = owner_pid))::text \
             FROM restate_lease",
        )
        .unwrap();
    assert_eq!(held, vec![vec![Some("true".to_owned())]]);
    // It takes the lease over all the same (its claim moves the epoch alone).
    cluster()
        .execute(&url, "UPDATE restate_lease SET epoch = epoch + 1")
        .unwrap();
    let fenced = owner.submit(vec![set("n", b"2")]).await;
    assert!(fenced.is_err(), "a fenced process committed: {fenced:?}");
    // The refusal has the writer look at its leases at once: the whole database is lost.
    let mut failure = owner.failure();
    let stopped = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        failure.wait_for(Option::is_some),
    );
    assert!(stopped.await.is_ok_and(|r| r.is_ok()), "the store goes on");
    let epochs = cluster()
        .query(&url, "SELECT DISTINCT epoch::text FROM restate_partitions")
        .unwrap();
    assert_eq!(
        epochs,
        vec![vec![Some("2".to_owned())]],
        "every partition moved"
    );
}

/// A drained process releases its partitions: a write after the release still commits (and
/// leaves them free), a second process takes them over at once although their leases are far
/// from expired, and the first one then commits nothing, its ownership gone and its store not
/// failed (a hand-over is not a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_partitions_are_taken_over_at_once_and_their_old_owner_commits_nothing() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    owner.submit(vec![set("n", b"1")]).await.unwrap();
    owner.release_lease(true).await.unwrap();
    // Committed between the release and a takeover: the partitions stay free.
    owner.submit(vec![set("n", b"2")]).await.unwrap();
    let url2 = url.clone();
    let next = tokio::task::spawn_blocking(move || {
        PostgresStorage::open(&url2, &with_lease(60_000, Some(10_000)))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        next.owned().borrow().len(),
        4,
        "the released partitions are taken at once, not after 60 s"
    );
    let mut ownership = owner.ownership();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ownership.wait_for(|owner| !*owner),
    )
    .await
    .expect("the old owner sees the hand-over")
    .unwrap();
    assert!(owner.owned().borrow().is_empty());
    let refused = owner.submit(vec![set("n", b"3")]).await;
    let Err(StorageError::Backend(reason)) = refused else {
        panic!("a process that handed its partitions over committed: {refused:?}");
    };
    assert!(reason.contains("took the database over"), "{reason}");
    assert!(
        owner.failure().borrow().is_none(),
        "a hand-over is no failure"
    );
    assert!(
        owner.release_lease(false).await.is_err(),
        "no lease to hold"
    );
    assert_eq!(next.state(&scope(), "n").unwrap(), Some(b"2".to_vec()));
    next.submit(vec![set("n", b"4")]).await.unwrap();
}

/// A store closed (the process stops: SIGTERM, a runtime's shutdown) commits what is queued,
/// then releases its partitions and leaves the live processes, as a drain does: the others
/// take them at once, not once the lease or the membership has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_commits_what_is_queued_then_releases_its_partitions() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    let queued = owner.submit(vec![set("n", b"1")]);
    owner.close();
    queued.await.unwrap();
    let free = cluster()
        .query(
            &url,
            "SELECT bool_and(expires_at < clock_timestamp())::text, \
             (SELECT count(*) FROM restate_members)::text FROM restate_partitions",
        )
        .unwrap();
    assert_eq!(
        free,
        vec![vec![Some("true".to_owned()), Some("0".to_owned())]],
        "released, and no longer a member"
    );
    let next = PostgresStorage::open(&url, &with_lease(60_000, Some(10_000))).unwrap();
    assert_eq!(next.owned().borrow().len(), 4);
    assert_eq!(next.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
}

/// Drained and released, a group refused because one of its partitions was taken refuses
/// every batch in it, so every partition it wrote is frozen: a later write there (an inbox
/// message's removal queued after the record it created) is refused too, never committed
/// without the refused one (found from outside: sends acknowledged `202` lost at each drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_release_a_refused_group_freezes_every_partition_it_wrote() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    owner.submit(vec![set_in(1, b"1")]).await.unwrap();
    owner.release_lease(true).await.unwrap();
    // Partition 0 taken by another process, unannounced.
    cluster()
        .execute(
            &url,
            "UPDATE restate_partitions SET epoch = epoch + 1 WHERE partition = 0",
        )
        .unwrap();
    let both = owner.submit(vec![set_in(0, b"2"), set_in(1, b"2")]).await;
    assert!(both.is_err(), "{both:?}");
    let later = owner.submit(vec![set_in(1, b"3")]).await;
    assert!(
        later.is_err(),
        "a later write of a refused partition committed"
    );
    assert_eq!(owner.state(&scope_in(1), "n").unwrap(), Some(b"1".to_vec()));
    assert!(owner.barrier(partition_key_in(1)).await.is_err());
    // One the group did not write is still written.
    owner.submit(vec![set_in(2, b"2")]).await.unwrap();
    assert!(
        owner.failure().borrow().is_none(),
        "a hand-over is no failure"
    );
}

/// Released, then held again (an undrain) before anyone took them: the leases are renewed,
/// and a process that joins takes none of them while their owner runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_held_again_after_a_release_are_not_taken() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    owner.release_lease(true).await.unwrap();
    let free = cluster()
        .query(
            &url,
            "SELECT bool_and(expires_at < clock_timestamp())::text FROM restate_partitions",
        )
        .unwrap();
    assert_eq!(free, vec![vec![Some("true".to_owned())]], "released");
    owner.release_lease(false).await.unwrap();
    let url2 = url.clone();
    let second = tokio::task::spawn_blocking(move || {
        PostgresStorage::open(&url2, &with_lease(60_000, Some(600)))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        second.owned().borrow().is_empty(),
        "partitions held again were taken"
    );
    owner.submit(vec![set("n", b"1")]).await.unwrap();
    assert!(*owner.ownership().borrow());
    assert_eq!(owner.owned().borrow().len(), 4);
}

/// The database stops answering the writer (its server process frozen, as behind a network
/// partition): the writer gives up within the lease's length instead of hanging while
/// another process may take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_the_database_stops_answering_stops_within_the_lease() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store = PostgresStorage::open(&url, &with_lease(1000, None)).unwrap();
    store.submit(vec![set("n", b"1")]).await.unwrap();
    let rows = cluster()
        .query(
            &url,
            "SELECT DISTINCT owner_pid::text FROM restate_partitions",
        )
        .unwrap();
    let pid = rows[0][0].clone().expect("the owner's server process");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let stuck = store.submit(vec![set("n", b"2")]).await;
    signal("-CONT");
    assert!(stuck.is_err(), "{stuck:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
    let reason = store.failure().borrow().clone().expect("the store stopped");
    assert!(reason.contains("no answer"), "{reason}");
}

#[tokio::test]
async fn recovery_reads_unfinished_invocations_in_pages_and_keeps_only_what_it_asks_for() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store = open(&url, 4).unwrap();
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    let mut ids: Vec<InvocationId> = (0..10_050).map(InvocationId::random).collect();
    ids.sort_by_key(|id| id.storage_key());
    let puts = ids
        .iter()
        .map(|id| WriteOp::put_new_invocation(*id, &record))
        .collect();
    store.submit(puts).await.unwrap();
    let mut seen = 0;
    let kept = store
        .unfinished_where(&mut |_, head| {
            assert!(head.is_some(), "every hint has its head");
            seen += 1;
            seen % 3 == 0
        })
        .unwrap();
    assert_eq!(
        seen,
        ids.len(),
        "every unfinished invocation is offered once"
    );
    let expected: Vec<_> = ids.iter().skip(2).step_by(3).copied().collect();
    assert_eq!(kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    assert_eq!(store.unfinished().unwrap().len(), ids.len());
}

/// Waits (up to 10 s) until `counter` changes.
async fn bumped(counter: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(std::time::Duration::from_secs(10), counter.changed())
        .await
        .expect("notified within 10 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_forwards_into_the_owners_inbox_once_per_invocation_then_takes_over() {
    use crate::storage::{Forwarded, InboxMessage, Outcome};
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    // The owner's lease round comes every 20 s: it offers nothing back during the test.
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    assert!(*owner.ownership().borrow());
    let standby = open_beside(&url).await;
    assert!(
        standby.owned().borrow().is_empty(),
        "a partition run by two processes"
    );
    let mut arrived = owner.signals().unwrap().inbox;
    let finished = standby.signals().unwrap().finished;
    arrived.borrow_and_update();

    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    let (fresh, stored) = (InvocationId::random(1), InvocationId::random(2));
    owner
        .submit(vec![WriteOp::put_new_invocation(stored, &record)])
        .await
        .unwrap();
    let invoke = || InboxMessage::Invoke(Box::new(record.clone()));
    assert_eq!(
        standby.forward(fresh, invoke()).await.unwrap(),
        Forwarded::New
    );
    bumped(&mut arrived).await;
    // Once per invocation across the deployment: in an inbox already, or stored.
    assert_eq!(
        standby.forward(fresh, invoke()).await.unwrap(),
        Forwarded::Duplicate
    );
    assert_eq!(
        owner.forward(fresh, invoke()).await.unwrap(),
        Forwarded::Duplicate
    );
    assert_eq!(
        standby.forward(stored, invoke()).await.unwrap(),
        Forwarded::Duplicate
    );
    // Forwarded at once (one group, or several): one is written.
    let racing = InvocationId::random(4);
    let answers =
        futures::future::join_all((0..8).map(|_| standby.forward(racing, invoke()))).await;
    let new = answers
        .iter()
        .filter(|a| *a.as_ref().unwrap() == Forwarded::New)
        .count();
    assert_eq!(new, 1, "{answers:?}");
    // Other messages are not deduplicated: each is applied.
    for _ in 0..2 {
        let sent = standby.forward(stored, InboxMessage::Cancel).await.unwrap();
        assert_eq!(sent, Forwarded::New);
    }
    assert_eq!(
        owner.inbox_pending(&fresh).unwrap(),
        crate::storage::InboxPending {
            starts: true,
            partition: true
        }
    );
    let other_key = InvocationId::random(3);
    assert_eq!(owner.inbox_pending(&other_key).unwrap(), Default::default());
    // Checks asked at once (read together, or a few groups at a time): each gets its own
    // answer, in its place.
    let asked = [fresh, other_key, stored, racing, other_key];
    let answers = futures::future::join_all(asked.iter().map(|id| owner.inbox_pending_async(id)));
    let answers: Vec<(bool, bool)> = (answers.await.into_iter())
        .map(|a| a.map(|a| (a.starts, a.partition)).unwrap())
        .collect();
    let both = (true, true);
    assert_eq!(answers, [both, (false, false), both, both, (false, false)]);
    let inbox = owner.inbox(10, usize::MAX).unwrap();
    let got: Vec<_> = inbox.iter().map(|m| (m.id, m.message.clone())).collect();
    assert_eq!(
        got,
        vec![
            (fresh, invoke()),
            (racing, invoke()),
            (stored, InboxMessage::Cancel),
            (stored, InboxMessage::Cancel)
        ],
        "in arrival order"
    );
    assert!(inbox.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        owner.inbox(1, usize::MAX).unwrap(),
        inbox[..1].to_vec(),
        "by count"
    );
    assert_eq!(owner.inbox(10, 1).unwrap(), inbox[..1].to_vec(), "by bytes");
    let done = vec![inbox[0].seq, inbox[1].seq, inbox[2].seq];
    owner
        .submit(vec![WriteOp::InboxDone { seqs: done }])
        .await
        .unwrap();
    assert_eq!(owner.inbox(10, usize::MAX).unwrap(), inbox[3..].to_vec());
    assert!(!owner.inbox_pending(&fresh).unwrap().starts);
    // A message this binary cannot read is left for one that can, and the rest still come.
    cluster()
        .execute(
            &url,
            "INSERT INTO restate_inbox (partition_key, id, starts, message) \
             VALUES (0, '\\x00', false, '\\xff00')",
        )
        .unwrap();
    assert_eq!(owner.inbox(10, usize::MAX).unwrap(), inbox[3..].to_vec());

    // The owner's commit of a finished invocation wakes its waiters in other processes, and
    // only those.
    let (mut waiting, mut other) = (finished.watch(stored), finished.watch(fresh));
    waiting.seen();
    other.seen();
    let done = InvocationRecord::for_test(
        "S",
        None,
        Status::Completed {
            outcome: Outcome::Success(b"1".to_vec()),
            completed_at_ms: 1,
            expires_at_ms: u64::MAX,
        },
    );
    owner
        .submit(vec![WriteOp::put_invocation(stored, &done)])
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting.changed())
        .await
        .expect("notified within 10 s");
    assert!(
        !other.has_changed(),
        "a waiter of another invocation was woken"
    );

    // The owner goes: the other process takes its partitions over and writes.
    let mut owned = standby.owned();
    drop(owner);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        owned.wait_for(|owned| owned.len() == 4),
    )
    .await
    .expect("taken over within 10 s")
    .unwrap();
    standby.submit(vec![set("n", b"2")]).await.unwrap();
    assert_eq!(standby.state(&scope(), "n").unwrap(), Some(b"2".to_vec()));
}

/// The owner of a partition creating an invocation from outside and another process
/// forwarding the same request (an idempotency key's, a workflow run's) to the owner's inbox:
/// exactly one of the two is told it was first, whether the forward commits before the
/// owner's first commit of the record, after it, or while it is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_and_a_forwarder_taking_the_same_request_agree_on_which_was_first() {
    use crate::storage::{Forwarded, InboxMessage};
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let owner = PostgresStorage::open(&url, &with_lease(60_000, None)).unwrap();
    let standby = open_beside(&url).await;
    assert!(standby.owned().borrow().is_empty());
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    let invoke = || InboxMessage::Invoke(Box::new(record.clone()));
    let create = |id| owner.submit(vec![WriteOp::put_new_invocation(id, &record)]);

    // Forwarded first: the owner's creation is the second.
    let id = InvocationId::random(1);
    let acceptance = owner.first_acceptance(id).unwrap();
    assert_eq!(standby.forward(id, invoke()).await.unwrap(), Forwarded::New);
    create(id).await.unwrap();
    assert!(acceptance.second());
    // Created first: the forward is the duplicate.
    let id = InvocationId::random(2);
    let acceptance = owner.first_acceptance(id).unwrap();
    create(id).await.unwrap();
    assert!(acceptance.first());
    assert_eq!(
        standby.forward(id, invoke()).await.unwrap(),
        Forwarded::Duplicate
    );
    // At once, in opposite orders: one first per id.
    let ids: Vec<InvocationId> = (10..310).map(InvocationId::random).collect();
    let acceptances: Vec<_> = (ids.iter())
        .map(|id| owner.first_acceptance(*id).unwrap())
        .collect();
    let creations = futures::future::join_all(ids.iter().map(|id| create(*id)));
    let forwards =
        futures::future::join_all(ids.iter().rev().map(|id| standby.forward(*id, invoke())));
    let (created, forwarded) = futures::join!(creations, forwards);
    for (n, (acceptance, created)) in acceptances.iter().zip(created).enumerate() {
        created.unwrap();
        let forwarded_new = *forwarded[ids.len() - 1 - n].as_ref().unwrap() == Forwarded::New;
        assert!(acceptance.first() || acceptance.second(), "decided");
        assert_ne!(
            acceptance.first(),
            forwarded_new,
            "exactly one first for id {n}"
        );
    }
    let claims = cluster()
        .query(
            &url,
            "SELECT count(*) FROM restate_inbox WHERE message = ''::bytea",
        )
        .unwrap();
    assert_eq!(
        claims,
        [vec![Some("0".to_owned())]],
        "no claim outlives its commit"
    );
}

/// Two standbys forwarding the same invocations at once, in opposite orders (their groups can
/// deadlock in the database, which rolls one back: it is written again): every forward is
/// answered, and each invocation is new exactly once across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_forwarding_the_same_invocations_at_once_write_each_once() {
    use crate::storage::{Forwarded, InboxMessage};
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let _owner = PostgresStorage::open(&url, &with_lease(10_000, None)).unwrap();
    let open_standby = || {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            PostgresStorage::open(&url, &with_lease(10_000, None)).unwrap()
        })
    };
    let (a, b) = (open_standby().await.unwrap(), open_standby().await.unwrap());
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    let ids: Vec<InvocationId> = (0..300).map(InvocationId::random).collect();
    let invoke = || InboxMessage::Invoke(Box::new(record.clone()));
    let forwards_a = futures::future::join_all(ids.iter().map(|id| a.forward(*id, invoke())));
    let forwards_b = futures::future::join_all(ids.iter().rev().map(|id| b.forward(*id, invoke())));
    let (answers_a, answers_b) = futures::join!(forwards_a, forwards_b);
    let new = answers_a
        .iter()
        .chain(&answers_b)
        .map(|answer| answer.as_ref().expect("every forward is answered"))
        .filter(|answer| **answer == Forwarded::New)
        .count();
    assert_eq!(new, ids.len(), "each invocation new exactly once");
}

#[tokio::test]
async fn a_reader_reads_beside_the_owner_and_writes_nothing() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let reader_options = PostgresOptions {
        read_only: true,
        ..Default::default()
    };
    // A database no process has set up is not one to read.
    assert!(PostgresStorage::open(&url, &reader_options).is_err());
    let owner = open(&url, 8).unwrap();
    let id = InvocationId::random(3);
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    owner
        .submit(vec![
            WriteOp::put_new_invocation(id, &record),
            set("n", b"1"),
        ])
        .await
        .unwrap();
    let reader = PostgresStorage::open(&url, &reader_options).unwrap();
    assert_eq!(reader.invocation(&id).unwrap(), Some(record));
    assert_eq!(reader.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
    assert_eq!((reader.secret(), reader.partitions()), (owner.secret(), 8));
    assert!(!*reader.ownership().borrow());
    assert!(reader.submit(vec![set("n", b"2")]).await.is_err());
    // The owner kept its lease and its writes; the reader's refused write changed nothing.
    owner.submit(vec![set("m", b"3")]).await.unwrap();
    assert_eq!(owner.state(&scope(), "m").unwrap(), Some(b"3".to_vec()));
    owner.submit(vec![set("n", b"4")]).await.unwrap();
    // Every read of a reader sees one snapshot: the database as it was when it opened.
    assert_eq!(reader.state(&scope(), "n").unwrap(), Some(b"1".to_vec()));
    assert_eq!(reader.state(&scope(), "m").unwrap(), None);
    assert_eq!(reader.state_keys(&scope()).unwrap(), ["n"]);
    let later = PostgresStorage::open(&url, &reader_options).unwrap();
    assert_eq!(later.state(&scope(), "n").unwrap(), Some(b"4".to_vec()));
    assert_eq!(later.state(&scope(), "m").unwrap(), Some(b"3".to_vec()));
    later.close();
    reader.close();
    owner.close();
}

#[tokio::test]
async fn the_fence_waits_for_a_takeover_in_flight_and_a_takeover_for_a_fenced_commit() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    // The schema, and the partitions' rows with the epochs the process took them at.
    drop(open(&url, 4).unwrap());
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let (writer, taker) = (connect().await, connect().await);
    async fn epochs(client: &tokio_postgres::Client) -> Vec<i64> {
        let rows = client
            .query(
                "SELECT epoch FROM restate_partitions WHERE partition IN (1, 2) ORDER BY partition",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
    let held = epochs(&writer).await;
    let partitions = vec![1i32, 2];
    let still_pending = std::time::Duration::from_millis(300);

    // Order 1: a takeover of partition 2 is in flight (its epoch moved, not yet committed).
    // The fence waits for it, then sees the new epoch and refuses, naming the partition.
    // Here the fence is part of a group's single statement, its own transaction, which
    // writes a state value: nothing of it lands.
    taker
        .batch_execute("BEGIN; UPDATE restate_partitions SET epoch = epoch + 1 WHERE partition = 2")
        .await
        .unwrap();
    let names = vec![b"s".to_vec()];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&partitions, &held, &names, &names, &names, &names];
    let group = statement(shape_of([Part::Fence, Part::PutState]));
    let fence = writer.execute(&group, &params);
    let mut fence = std::pin::pin!(fence);
    assert!(
        tokio::time::timeout(still_pending, &mut fence)
            .await
            .is_err(),
        "the fence passed while a takeover of its partition was in flight"
    );
    taker.batch_execute("COMMIT").await.unwrap();
    let refused = fence
        .await
        .expect_err("the fence let a write through after a takeover");
    let db = refused.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), super::ownership::FENCED_STATE);
    assert_eq!(db.detail(), Some("2"));
    let written = (writer.query("SELECT 1 FROM restate_state", &[]).await).unwrap();
    assert!(written.is_empty(), "a refused group wrote its state value");

    // Order 2: the fence passes first (the epochs as they are now) and holds its lock; a
    // takeover of partition 1 waits until the fenced transaction has committed.
    let now = vec![held[0], held[1] + 1];
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .execute(Part::Fence.sql(), &[&partitions, &now])
        .await
        .expect("the fence refused the epochs it holds");
    writer
        .batch_execute("UPDATE restate_meta SET value = value WHERE name = 'partitions'")
        .await
        .unwrap();
    let takeover = taker.execute(
        "UPDATE restate_partitions SET epoch = epoch + 1 WHERE partition = 1",
        &[],
    );
    let mut takeover = std::pin::pin!(takeover);
    assert!(
        tokio::time::timeout(still_pending, &mut takeover)
            .await
            .is_err(),
        "a takeover committed while a fenced transaction held the partition"
    );
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(takeover.await.unwrap(), 1);
    assert_eq!(epochs(&writer).await, vec![held[0] + 1, held[1] + 1]);
}

/// What the backend runs again and again: the writer's statements, the forwarder's, the inbox
/// checks and the reads. A group's statement is planned whole and each of its parts alone.
fn repeated_statements() -> Vec<String> {
    let mut all: Vec<&'static str> = Part::ALL.iter().map(|part| part.sql()).collect();
    all.extend([
        super::writer::READ_RECORD,
        super::writer::PUT_RECORD,
        super::forwarder::INSERT,
        super::forwarder::LATE_DUPLICATES,
        <super::lookups::Inbox as super::lookups::Lookup>::SQL,
        <super::lookups::State as super::lookups::Lookup>::SQL,
        <super::lookups::Record as super::lookups::Lookup>::SQL,
        super::STORED,
        super::JOURNAL,
        super::LIST,
        super::PROMISE_WAITERS,
        super::UNFINISHED,
        super::DUE,
        super::RESULT_WAITERS_OF,
        super::EXPIRED,
        super::INBOX_PAGE,
        super::STATE_NAMES,
        super::PROMISE,
        super::DUE_COUNT,
        super::RESULT_WAITERS,
        super::WOKEN,
    ]);
    let mut all: Vec<String> = all.into_iter().map(str::to_owned).collect();
    // A group's statement with every part, and the halves of a group split in two.
    let parts = Part::ALL.into_iter();
    all.push(statement(shape_of(parts.clone())));
    all.push(statement(shape_of(parts.clone().filter(|p| p.deletes()))));
    all.push(statement(shape_of(parts.filter(|p| !p.deletes()))));
    all
}

/// Planned as this backend's sessions plan them (`PLANS`), on a fresh database (generic plans,
/// reused for the connection's life, made while the tables look empty), every repeated
/// statement looks its rows up by key: each scan of a table that grows with the work has an
/// index condition (no sequential scan, no whole index read), and no subquery is hashed over
/// a whole table. Without the sessions' settings and the `OFFSET 0`s, such plans are chosen
/// there, and cost a read of the whole table per statement as it grows. Only the reads that
/// want a whole table in order (the inbox's pages, recovery's) read it all.
#[tokio::test]
async fn repeated_statements_look_rows_up_by_key_on_a_fresh_database() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    drop(open(&url, 8).unwrap());
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    super::with_session_options(&mut config, super::PLANS, "");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // Tables of fixed size (one row per partition, per process) may be scanned.
    let growing = [
        "restate_invocations",
        "restate_journal",
        "restate_state",
        "restate_inbox",
        "restate_promises",
        "restate_promise_waiters",
        "restate_wakes",
        "restate_result_waiters",
    ];
    let whole = [
        super::INBOX_PAGE,
        super::RESULT_WAITERS,
        super::WOKEN,
        super::DUE_COUNT,
    ];
    for (n, sql) in repeated_statements().into_iter().enumerate() {
        let params = client.prepare(&sql).await.unwrap().params().len();
        client
            .batch_execute(&format!("PREPARE s{n} AS {sql}"))
            .await
            .unwrap();
        let args = match params {
            0 => String::new(),
            n => format!("({})", vec!["NULL"; n].join(", ")),
        };
        let plan: Vec<String> = (client.query(&format!("EXPLAIN EXECUTE s{n}{args}"), &[]))
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let shown = plan.join("\n");
        assert!(!shown.contains("hashed SubPlan"), "{sql}\n{shown}");
        // The plan's nodes: a line with `->` (or the first) and the lines of detail below it.
        let mut nodes: Vec<Vec<&str>> = Vec::new();
        for line in &plan {
            match nodes.last_mut() {
                Some(node) if !line.trim_start().starts_with("->") => node.push(line),
                _ => nodes.push(vec![line]),
            }
        }
        for node in nodes {
            let Some((kind, rest)) = node[0].split_once(" on ") else {
                continue;
            };
            let table = rest.split_whitespace().next().unwrap_or_default();
            if !kind.contains("Scan") || !growing.contains(&table) {
                continue;
            }
            let keyed = !kind.contains("Seq Scan")
                && node[1..]
                    .iter()
                    .any(|l| l.contains("Index Cond") || l.contains("Recheck Cond"));
            assert!(keyed || whole.contains(&sql.as_str()), "{sql}\n{shown}");
        }
    }
}

/// One group of point reads answers each ask from its own row, in the order asked: a value
/// stored empty as empty, one never stored as `None`, the same name asked twice twice, and a
/// record this binary cannot read (a newer binary's) as an error for its own ask only. Each
/// ask stops counting as unanswered once answered.
#[tokio::test]
async fn a_group_of_point_reads_answers_each_ask_from_its_own_row() {
    use super::lookups::{self, Ask};
    use tokio::sync::oneshot;
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store = open(&url, 8).unwrap();
    let id = InvocationId::random(3);
    let record = InvocationRecord::for_test("S", None, Status::Runnable);
    store
        .submit(vec![
            WriteOp::put_new_invocation(id, &record),
            set("empty", b""),
            set("n", b"1"),
        ])
        .await
        .unwrap();
    let unreadable = InvocationId::random(4);
    let key: String = (unreadable.storage_key().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    cluster()
        .execute(
            &url,
            &format!(
                "INSERT INTO restate_invocations (id, partition_key, record) \
                 VALUES ('\\x{key}', 4, '\\xff00')"
            ),
        )
        .unwrap();

    fn ask<L: lookups::Lookup>(
        store: &PostgresStorage,
        key: L::Key,
    ) -> (Ask<L>, oneshot::Receiver<Result<L::Answer, StorageError>>) {
        let (done, answer) = oneshot::channel();
        let reading = super::Unanswered::count(&store.shared);
        (Ask { key, done, reading }, answer)
    }
    let names = ["n", "empty", "never", "n"];
    let (asks, answers): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|name| ask::<lookups::State>(&store, (scope(), name.to_string())))
        .unzip();
    assert_eq!(store.unanswered(), 4);
    lookups::answer(store.reads.clone(), asks).await;
    assert_eq!(store.unanswered(), 0);
    let mut values = Vec::new();
    for answer in answers {
        values.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(
        values,
        [
            Some(b"1".to_vec()),
            Some(Vec::new()),
            None,
            Some(b"1".to_vec())
        ]
    );

    let ids = [unreadable, id, InvocationId::random(5), id];
    let (asks, answers): (Vec<_>, Vec<_>) = ids
        .iter()
        .map(|id| ask::<lookups::Record>(&store, *id))
        .unzip();
    lookups::answer(store.reads.clone(), asks).await;
    assert_eq!(store.unanswered(), 0);
    let mut records = Vec::new();
    for answer in answers {
        records.push(answer.await.unwrap());
    }
    assert!(
        matches!(records[0], Err(StorageError::Decode(_))),
        "{:?}",
        records[0]
    );
    let target = |r: &Result<Option<InvocationRecord>, StorageError>| {
        r.as_ref().unwrap().as_ref().map(|r| r.target.clone())
    };
    assert_eq!(target(&records[1]), Some(record.target.clone()));
    assert_eq!(target(&records[2]), None);
    assert_eq!(target(&records[3]), Some(record.target.clone()));
}

/// A forwarded group whose insert fails is answered with the error, writes nothing, and
/// leaves no transaction open on its pooled connection: the groups after it are written.
#[tokio::test]
async fn a_failed_forward_writes_nothing_and_the_next_ones_go_through() {
    use crate::storage::{Forwarded, InboxMessage};
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let store = open(&url, 8).unwrap();
    // Refuses one id, as a constraint or a full disk would.
    cluster()
        .execute(
            &url,
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.partition_key = 7 THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_one BEFORE INSERT ON restate_inbox \
             FOR EACH ROW EXECUTE FUNCTION refuse_one()",
        )
        .unwrap();
    let refused = store
        .forward(InvocationId::random(7), InboxMessage::Cancel)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    for n in 0..20 {
        let written = store.forward(InvocationId::random(100 + n), InboxMessage::Cancel);
        assert_eq!(written.await.unwrap(), Forwarded::New);
    }
    let rows = cluster()
        .query(
            &url,
            "SELECT count(*), count(*) FILTER (WHERE partition_key = 7) FROM restate_inbox",
        )
        .unwrap();
    assert_eq!(
        rows,
        [vec![Some("20".to_owned()), Some("0".to_owned())]],
        "the refused message is not there, the others are"
    );
}

/// A round between renewals (told of partitions another process released, or a look for free
/// ones) does not put the next renewal off: it stays a third of the lease after the last one,
/// so a slow database still has most of the lease to answer it in.
#[tokio::test(flavor = "multi_thread")]
async fn a_round_between_renewals_keeps_the_next_renewal_where_it_was() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    drop(open(&url, 4).unwrap());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let every = std::time::Duration::from_secs(10);
    let mut leases =
        super::ownership::Leases::prepare(&client, 3 * every, 4, crate::storage::Peers::default())
            .await
            .unwrap();
    leases.round(&client).await.unwrap().unwrap();
    assert!(leases.next_round_in() > every - std::time::Duration::from_secs(1));
    let between = std::time::Duration::from_millis(500);
    tokio::time::sleep(between).await;
    leases.round(&client).await.unwrap().unwrap();
    let next = leases.next_round_in();
    assert!(
        next <= every - between,
        "the renewal moved to {next:?} from now"
    );
}

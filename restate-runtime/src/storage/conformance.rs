//! The storage conformance suite: one set of tests, run against every backend (redb in a
//! temporary folder, memory), that the next backends must pass too. Each test writes through
//! [`Storage::submit`] and reads back through the trait alone.

use std::sync::Arc;

use super::memory::MemoryStore;
use super::records::{InvocationRecord, JournalEntry, Outcome, Status};
use super::{RedbOptions, RedbStorage, StateScope, Storage, WriteOp};
use crate::ids::InvocationId;

/// A fresh store of each backend, with what keeps it alive (the redb folder).
fn backends() -> Vec<(&'static str, Arc<dyn Storage>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
    #[allow(unused_mut)]
    let mut all: Vec<(&'static str, Arc<dyn Storage>, Option<tempfile::TempDir>)> = vec![
        ("redb", Arc::new(redb), Some(dir)),
        ("memory", Arc::new(MemoryStore::default().open(4)), None),
    ];
    #[cfg(feature = "postgres")]
    if let Some(store) = postgres() {
        all.push(("postgres", Arc::new(store), None));
    }
    all
}

/// A store on a fresh database of the test process's private PostgreSQL cluster (none where
/// PostgreSQL is not installed and not required).
#[cfg(feature = "postgres")]
fn postgres() -> Option<super::PostgresStorage> {
    let cluster = crate::testing::PostgresCluster::for_tests()?;
    let url = cluster.fresh_database().expect("a fresh database");
    let options = super::PostgresOptions {
        partitions: 4,
        ..Default::default()
    };
    Some(super::PostgresStorage::open(&url, &options).expect("the PostgreSQL store opens"))
}

/// Runs `check` against every backend, naming the one that fails.
async fn each_backend<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Storage>) -> Fut,
    Fut: Future<Output = ()>,
{
    for (name, store, _dir) in backends() {
        eprintln!("backend: {name}");
        check(store).await;
    }
}

async fn write(store: &Arc<dyn Storage>, ops: Vec<WriteOp>) {
    store.submit(ops).await.expect("committed");
}

fn record(status: Status, key: Option<&str>) -> InvocationRecord {
    InvocationRecord {
        input: b"1".to_vec(),
        ..InvocationRecord::for_test("S", key, status)
    }
}

fn completed(expires_at_ms: u64) -> Status {
    Status::Completed {
        outcome: Outcome::Success(b"\"ok\"".to_vec()),
        completed_at_ms: 1,
        expires_at_ms,
    }
}

fn scope(service: &str, key: &str) -> StateScope {
    StateScope {
        service: service.into(),
        key: key.into(),
    }
}

fn ids(n: u64) -> Vec<InvocationId> {
    let mut ids: Vec<_> = (0..n).map(|i| InvocationId::random(i % 3)).collect();
    ids.sort_by_key(|id| id.storage_key());
    ids
}

#[tokio::test]
async fn records_read_back_and_page_in_id_order() {
    each_backend(|store| async move {
        let all = ids(5);
        for id in &all {
            write(
                &store,
                vec![WriteOp::put_new_invocation(
                    *id,
                    &record(Status::Runnable, None),
                )],
            )
            .await;
        }
        let first = store.invocations(None, 2).unwrap();
        assert_eq!(
            first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            all[..2]
        );
        let rest = store.invocations(Some(all[1]), 10).unwrap();
        assert_eq!(rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(), all[2..]);
        assert_eq!(
            store.invocation(&all[3]).unwrap(),
            Some(record(Status::Runnable, None))
        );
        assert_eq!(store.invocation(&InvocationId::random(9)).unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn journals_come_back_by_index_per_invocation() {
    each_backend(|store| async move {
        let [a, b] = [InvocationId::random(1), InvocationId::random(1)];
        let entry = |name: &str| JournalEntry::Run {
            name: name.into(),
            outcome: Outcome::Success(b"1".to_vec()),
        };
        write(
            &store,
            vec![
                WriteOp::put_journal(a, 2, &entry("two")),
                WriteOp::put_journal(a, 0, &entry("zero")),
                WriteOp::put_journal(b, 1, &entry("other")),
                WriteOp::put_journal(a, 1, &entry("one")),
            ],
        )
        .await;
        let journal = store.journal(&a).unwrap();
        assert_eq!(
            journal,
            vec![(0, entry("zero")), (1, entry("one")), (2, entry("two"))]
        );
        write(&store, vec![WriteOp::put_journal(a, 1, &entry("again"))]).await;
        assert_eq!(store.journal(&a).unwrap()[1], (1, entry("again")));
        assert_eq!(store.journal(&b).unwrap(), vec![(1, entry("other"))]);
    })
    .await;
}

#[tokio::test]
async fn state_is_kept_per_key_with_sorted_names() {
    each_backend(|store| async move {
        let (x, y, near) = (scope("A", "b"), scope("A", "bb"), scope("Ab", ""));
        let set = |scope: &StateScope, name: &str, v: &[u8]| WriteOp::SetState {
            scope: scope.clone(),
            name: name.into(),
            value: v.to_vec(),
        };
        write(
            &store,
            vec![
                set(&x, "b", b"2"),
                set(&x, "a", b"1"),
                set(&y, "a", b"3"),
                set(&near, "a", b"4"),
            ],
        )
        .await;
        assert_eq!(store.state_keys(&x).unwrap(), ["a", "b"]);
        assert_eq!(store.state(&x, "b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.state(&y, "b").unwrap(), None);
        write(
            &store,
            vec![WriteOp::ClearState {
                scope: x.clone(),
                name: "a".into(),
            }],
        )
        .await;
        assert_eq!(store.state_keys(&x).unwrap(), ["b"]);
        write(&store, vec![WriteOp::ClearAllState { scope: x.clone() }]).await;
        assert!(store.state_keys(&x).unwrap().is_empty());
        assert_eq!(
            store.state_keys(&y).unwrap(),
            ["a"],
            "another key is untouched"
        );
        assert_eq!(store.state_keys(&near).unwrap(), ["a"]);
    })
    .await;
}

#[tokio::test]
async fn promises_and_their_waiters_are_kept_and_cleared() {
    each_backend(|store| async move {
        let flow = scope("W", "k");
        let [a, b] = [InvocationId::random(1), InvocationId::random(2)];
        let waiter = |id, index, name: &str| WriteOp::AddPromiseWaiter {
            scope: flow.clone(),
            name: name.into(),
            id,
            index,
        };
        write(
            &store,
            vec![waiter(a, 3, "p"), waiter(b, 1, "p"), waiter(a, 4, "q")],
        )
        .await;
        let mut waiting = store.promise_waiters(&flow, "p").unwrap();
        waiting.sort();
        let mut expected = vec![(a, 3), (b, 1)];
        expected.sort();
        assert_eq!(waiting, expected);
        let outcome = Outcome::Success(b"\"done\"".to_vec());
        write(
            &store,
            vec![
                WriteOp::PutPromise {
                    scope: flow.clone(),
                    name: "p".into(),
                    encoded: super::records::encode(&outcome),
                },
                WriteOp::ClearPromiseWaiters {
                    scope: flow.clone(),
                    name: "p".into(),
                },
            ],
        )
        .await;
        assert_eq!(store.promise(&flow, "p").unwrap(), Some(outcome));
        assert!(store.promise_waiters(&flow, "p").unwrap().is_empty());
        assert_eq!(store.promise_waiters(&flow, "q").unwrap(), vec![(a, 4)]);
        write(
            &store,
            vec![WriteOp::ClearPromises {
                scope: flow.clone(),
            }],
        )
        .await;
        assert_eq!(store.promise(&flow, "p").unwrap(), None);
        assert!(store.promise_waiters(&flow, "q").unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_due_index_follows_each_record_until_it_completes_and_expires() {
    each_backend(|store| async move {
        let id = InvocationId::random(5);
        let scheduled = record(Status::Scheduled { at_ms: 100 }, Some("k"));
        write(&store, vec![WriteOp::put_new_invocation(id, &scheduled)]).await;
        assert_eq!(store.due(None, 1_000, 10).unwrap(), vec![(100, id)]);
        assert!(store.due(None, 99, 10).unwrap().is_empty());
        let suspended = record(
            Status::Suspended {
                wake_at_ms: Some(200),
            },
            Some("k"),
        );
        write(&store, vec![WriteOp::put_invocation(id, &suspended)]).await;
        assert_eq!(store.due(None, 1_000, 10).unwrap(), vec![(200, id)]);
        assert_eq!(store.due_len().unwrap(), 1);
        let (_, hint) = store.unfinished().unwrap().pop().expect("unfinished");
        assert_eq!(hint.due_at_ms, Some(200));
        assert_eq!(
            store.due(None, 200, 10).unwrap(),
            vec![(200, id)],
            "due at the bound"
        );
        assert!(
            store.due(Some((200, id)), 100, 10).unwrap().is_empty(),
            "after the end"
        );
        write(
            &store,
            vec![WriteOp::put_invocation(
                id,
                &record(Status::Runnable, Some("k")),
            )],
        )
        .await;
        assert!(
            store.due(None, u64::MAX, 10).unwrap().is_empty(),
            "woken: no timer"
        );
        write(&store, vec![WriteOp::put_invocation(id, &suspended)]).await;
        write(
            &store,
            vec![WriteOp::put_invocation(
                id,
                &record(completed(500), Some("k")),
            )],
        )
        .await;
        assert!(store.due(None, u64::MAX, 10).unwrap().is_empty());
        assert!(store.unfinished().unwrap().is_empty());
        assert!(store.expired(499, 10).unwrap().is_empty());
        let expired = store.expired(500, 10).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, id);
        assert_eq!(
            expired[0].1.as_ref().map(|t| t.key.as_deref()),
            Some(Some("k"))
        );
    })
    .await;
}

#[tokio::test]
async fn due_pages_resume_after_the_last_entry_read() {
    each_backend(|store| async move {
        let all = ids(6);
        for (n, id) in all.iter().enumerate() {
            let at_ms = 10 * (n as u64 % 3);
            let op = WriteOp::put_new_invocation(*id, &record(Status::Scheduled { at_ms }, None));
            write(&store, vec![op]).await;
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.due(after, 1_000, 2).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            seen.extend(page);
        }
        let mut expected: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(n, id)| (10 * (n as u64 % 3), *id))
            .collect();
        expected.sort_by_key(|(at, id)| (*at, id.storage_key()));
        assert_eq!(seen, expected);
    })
    .await;
}

#[tokio::test]
async fn wake_ups_are_listed_once_and_cleared_with_completion() {
    each_backend(|store| async move {
        let id = InvocationId::random(1);
        let suspended = record(Status::Suspended { wake_at_ms: None }, None);
        write(
            &store,
            vec![
                WriteOp::put_new_invocation(id, &suspended),
                WriteOp::Wake { id, index: 1 },
                WriteOp::Wake { id, index: 2 },
            ],
        )
        .await;
        assert_eq!(store.woken().unwrap(), vec![id]);
        write(
            &store,
            vec![WriteOp::ClearWakes {
                id,
                indexes: vec![1],
            }],
        )
        .await;
        assert_eq!(store.woken().unwrap(), vec![id]);
        write(
            &store,
            vec![WriteOp::put_invocation(id, &record(completed(9), None))],
        )
        .await;
        assert!(
            store.woken().unwrap().is_empty(),
            "completion clears its wake-ups"
        );
    })
    .await;
}

#[tokio::test]
async fn result_waiters_are_found_by_source_and_cleared() {
    each_backend(|store| async move {
        let [a, b, c] = [1, 2, 3].map(InvocationId::random);
        write(
            &store,
            vec![
                WriteOp::AddResultWaiter {
                    source: a,
                    waiter: b,
                    index: 3,
                    call: true,
                },
                WriteOp::AddResultWaiter {
                    source: c,
                    waiter: b,
                    index: 4,
                    call: false,
                },
            ],
        )
        .await;
        let of_a = store.result_waiters(Some(&a)).unwrap();
        assert_eq!(of_a.len(), 1);
        assert_eq!((of_a[0].waiter, of_a[0].index, of_a[0].call), (b, 3, true));
        assert_eq!(store.result_waiters(None).unwrap().len(), 2);
        write(&store, vec![WriteOp::ClearResultWaiters { source: a }]).await;
        assert!(store.result_waiters(Some(&a)).unwrap().is_empty());
        assert_eq!(store.result_waiters(None).unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_cancel_request_marks_only_unfinished_records() {
    each_backend(|store| async move {
        let [running, done] = [InvocationId::random(1), InvocationId::random(2)];
        write(
            &store,
            vec![
                WriteOp::put_new_invocation(running, &record(Status::Runnable, None)),
                WriteOp::put_new_invocation(done, &record(completed(9), None)),
                WriteOp::RequestCancel { id: running },
                WriteOp::RequestCancel { id: done },
                WriteOp::RequestCancel {
                    id: InvocationId::random(3),
                },
            ],
        )
        .await;
        assert!(
            store
                .invocation(&running)
                .unwrap()
                .unwrap()
                .cancel_requested
        );
        assert!(!store.invocation(&done).unwrap().unwrap().cancel_requested);
    })
    .await;
}

#[tokio::test]
async fn deleting_an_invocation_removes_it_from_every_index() {
    each_backend(|store| async move {
        let [done, waiting, kept] = [1, 2, 3].map(InvocationId::random);
        let entry = JournalEntry::Sleep {
            wake_at_ms: 5,
            cancelled: false,
        };
        write(&store, vec![WriteOp::put_journal(kept, 0, &entry)]).await;
        write(
            &store,
            vec![
                WriteOp::put_new_invocation(done, &record(completed(50), None)),
                WriteOp::put_journal(done, 0, &entry),
                WriteOp::put_new_invocation(
                    waiting,
                    &record(
                        Status::Suspended {
                            wake_at_ms: Some(70),
                        },
                        None,
                    ),
                ),
                WriteOp::Wake {
                    id: waiting,
                    index: 0,
                },
            ],
        )
        .await;
        write(
            &store,
            vec![
                WriteOp::DeleteInvocation { id: done },
                WriteOp::DeleteInvocation { id: waiting },
            ],
        )
        .await;
        for id in [done, waiting] {
            assert_eq!(store.invocation(&id).unwrap(), None);
            assert!(store.journal(&id).unwrap().is_empty());
        }
        assert!(store.expired(u64::MAX, 10).unwrap().is_empty());
        assert!(store.due(None, u64::MAX, 10).unwrap().is_empty());
        assert!(store.unfinished().unwrap().is_empty());
        assert!(store.woken().unwrap().is_empty());
        assert_eq!(
            store.journal(&kept).unwrap().len(),
            1,
            "another journal is untouched"
        );
    })
    .await;
}

#[tokio::test]
async fn recovery_filters_unfinished_invocations_by_their_hint_heads() {
    each_backend(|store| async move {
        let [keyed, plain] = [InvocationId::random(1), InvocationId::random(2)];
        write(
            &store,
            vec![
                WriteOp::put_new_invocation(keyed, &record(Status::Runnable, Some("k"))),
                WriteOp::put_new_invocation(
                    plain,
                    &record(Status::Suspended { wake_at_ms: None }, None),
                ),
            ],
        )
        .await;
        let mut heads = Vec::new();
        let kept = store
            .unfinished_where(&mut |id, head| {
                let head = head.expect("current format");
                heads.push((id, head.keyed, head.suspended));
                head.keyed
            })
            .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, keyed);
        heads.sort_by_key(|(id, _, _)| id.storage_key());
        let mut expected = vec![(keyed, true, false), (plain, false, true)];
        expected.sort_by_key(|(id, _, _)| id.storage_key());
        assert_eq!(heads, expected);
        assert_eq!(store.unfinished().unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn batches_commit_in_submission_order() {
    each_backend(|store| async move {
        let s = scope("A", "k");
        let set = |v: &[u8]| WriteOp::SetState {
            scope: s.clone(),
            name: "n".into(),
            value: v.to_vec(),
        };
        let first = store.submit(vec![set(b"1")]);
        let second = store.submit(vec![set(b"2")]);
        let (a, b) = tokio::join!(first, second);
        a.unwrap();
        b.unwrap();
        assert_eq!(store.state(&s, "n").unwrap().as_deref(), Some(&b"2"[..]));
        assert_ne!(store.secret(), [0; 32]);
        assert!(store.partitions() >= 1);
    })
    .await;
}

#[tokio::test]
async fn a_closed_store_refuses_writes() {
    each_backend(|store| async move {
        store.close();
        let set = WriteOp::SetState {
            scope: scope("A", "k"),
            name: "n".into(),
            value: b"1".to_vec(),
        };
        assert!(store.submit(vec![set]).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn a_memory_store_keeps_what_was_committed_across_a_kill_and_fences_the_old_handle() {
    let store = MemoryStore::default();
    let first = store.open(4);
    let s = scope("A", "k");
    let set = |v: &[u8]| WriteOp::SetState {
        scope: s.clone(),
        name: "n".into(),
        value: v.to_vec(),
    };
    first.submit(vec![set(b"1")]).await.unwrap();
    store.kill_after_commits(1);
    first.submit(vec![set(b"2")]).await.unwrap();
    assert!(
        first.submit(vec![set(b"3")]).await.is_err(),
        "killed after the commit"
    );
    assert!(first.failure().borrow().is_some());
    let second = store.open(8);
    assert_eq!(second.state(&s, "n").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(
        second.secret(),
        first.secret(),
        "the store's secret is its own"
    );
    assert_eq!(second.partitions(), 4, "fixed when first opened");
    store.kill();
    assert!(
        second.state(&s, "n").is_err(),
        "a dead process reads nothing"
    );
}

#[tokio::test]
async fn times_at_the_end_of_the_clock_stay_in_the_future() {
    each_backend(|store| async move {
        let [far, kept] = ids(2).try_into().unwrap();
        let sleeping = record(
            Status::Suspended {
                wake_at_ms: Some(u64::MAX),
            },
            None,
        );
        write(
            &store,
            vec![
                WriteOp::put_new_invocation(far, &sleeping),
                WriteOp::put_new_invocation(kept, &record(completed(u64::MAX), None)),
            ],
        )
        .await;
        let now = 1 << 62;
        assert!(store.expired(now, usize::MAX).unwrap().is_empty());
        assert!(store.due(None, now, usize::MAX).unwrap().is_empty());
        let due = store.due(None, u64::MAX, usize::MAX).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, far);
        assert!(due[0].0 > now);
        assert!(store.due(Some(due[0]), u64::MAX, 10).unwrap().is_empty());
        assert_eq!(store.invocations(None, usize::MAX).unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn keys_and_names_hold_any_string_and_sort_by_their_bytes() {
    each_backend(|store| async move {
        let odd = scope("Counter", "a\0b\u{1F600}");
        let names = ["é", "a", "B", "nul\0here"];
        write(
            &store,
            names
                .iter()
                .map(|name| WriteOp::SetState {
                    scope: odd.clone(),
                    name: (*name).into(),
                    value: name.as_bytes().to_vec(),
                })
                .collect(),
        )
        .await;
        assert_eq!(
            store.state_keys(&odd).unwrap(),
            vec!["B", "a", "nul\0here", "é"]
        );
        assert_eq!(
            store.state(&odd, "nul\0here").unwrap(),
            Some(b"nul\0here".to_vec())
        );
        assert!(store.state_keys(&scope("Counter", "a")).unwrap().is_empty());
    })
    .await;
}

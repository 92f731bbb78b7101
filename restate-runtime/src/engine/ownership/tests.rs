//! Partitions joining and leaving an engine, and effects crossing partitions between two
//! processes on one shared (in-memory) store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::super::tests::test_config;
use super::super::{Engine, EngineConfig, InvokeRequest};
use crate::context::InvocationContext;
use crate::error::HandlerError;
use crate::ids::{InvocationId, partition_key_of};
use crate::registry::{
    HandlerKind, Registry, Service, ServiceDefinition, ServiceKind, internal_handler,
};
use crate::storage::{
    MemoryStorage, MemoryStore, Outcome, Partitions, StateScope, Status, Storage, StorageError,
    Target, WriteOp,
};

const PARTITIONS: u32 = 4;

/// An object whose one handler notes which invocation ran it, waits until `open`, and
/// notes that it got past.
#[derive(Clone)]
struct Tally {
    runs: Arc<Mutex<HashMap<InvocationId, u32>>>,
    /// The invocations in the order they ran.
    order: Arc<Mutex<Vec<InvocationId>>>,
    passed: Arc<Mutex<HashMap<InvocationId, u32>>>,
    open: watch::Receiver<bool>,
}

impl Tally {
    fn new(open: bool) -> (Self, watch::Sender<bool>) {
        let (gate, open) = watch::channel(open);
        let (runs, order, passed) = (Arc::default(), Arc::default(), Arc::default());
        let tally = Self {
            runs,
            order,
            passed,
            open,
        };
        (tally, gate)
    }

    fn runs(&self, id: &InvocationId) -> u32 {
        self.runs.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn passed(&self, id: &InvocationId) -> u32 {
        self.passed.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn registry(&self) -> Registry {
        let bound = vec![
            (Tally::definition(), Arc::new(self.clone()) as _),
            (Relay::definition(), Arc::new(Relay) as _),
        ];
        Registry::assemble(bound, Default::default()).unwrap()
    }
}

/// An object whose handlers call or send `Tally/{key}/note` for the key they are given,
/// and return the id that `note` returned (a call), the id of what they sent (a send), both
/// (a send, then a call),
/// what `note` returned to an attach after a send (an attach), or the code of the error
/// that an attach to the second of two sends got after cancelling it (a cancel).
struct Relay;

impl Service for Relay {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: "Relay",
            kind: ServiceKind::VirtualObject,
            handlers: ["call", "send", "send-call", "attach", "cancel"]
                .map(|name| {
                    internal_handler(name, HandlerKind::Exclusive, Some("String"), "String")
                })
                .into(),
        }
    }

    fn invoke<'a>(
        &'a self,
        handler: &'a str,
        ctx: &'a InvocationContext,
        input: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async move {
            let key: String = serde_json::from_slice(&input).unwrap();
            let note = || crate::client::parts("Tally", Some(&key), "note", Ok(Bytes::new()));
            let got = match handler {
                "call" => ctx.call::<String>(note()).await?,
                "send" => ctx.send(note(), None).to_string(),
                "send-call" => {
                    let sent = ctx.send(note(), None);
                    let called = ctx.call::<String>(note()).await?;
                    format!("{sent} {called}")
                }
                "attach" => {
                    let sent = ctx.send(note(), None);
                    ctx.attach_invocation::<String>(sent).await?
                }
                _ => {
                    ctx.send(note(), None);
                    let second = ctx.send(note(), None);
                    ctx.cancel_invocation(second);
                    match ctx.attach_invocation::<String>(second).await {
                        Ok(got) => got,
                        Err(e) => e.code().to_string(),
                    }
                }
            };
            crate::__private::output(Ok::<_, HandlerError>(got))
        })
    }
}

impl Service for Tally {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: "Tally",
            kind: ServiceKind::VirtualObject,
            handlers: vec![internal_handler(
                "note",
                HandlerKind::Exclusive,
                None,
                "String",
            )],
        }
    }

    fn invoke<'a>(
        &'a self,
        _handler: &'a str,
        ctx: &'a InvocationContext,
        input: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        *self.runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
        self.order.lock().unwrap().push(ctx.id());
        let (mut open, passed, id) = (self.open.clone(), self.passed.clone(), ctx.id());
        Box::pin(async move {
            // Asked to be stored before the gate: a journal entry stores the invocation.
            if &input[..] == STORED {
                ctx.sleep(Duration::from_millis(1)).await?;
            }
            let _ = open.wait_for(|open| *open).await;
            *passed.lock().unwrap().entry(id).or_default() += 1;
            crate::__private::output(Ok::<_, HandlerError>(id.to_string()))
        })
    }
}

/// The input that has `Tally/note` write a journal entry before its gate.
const STORED: &[u8] = b"stored";

/// Hands `partitions` to the process on `storage`, fenced (at the start, or after its
/// engine let go of those it had).
fn hand(storage: &MemoryStorage, partitions: &Partitions) {
    storage.set_owned(partitions.clone());
    storage.fence();
}

/// Two processes on one shared store, the first handed partitions 0 and 1, the second 2
/// and 3.
struct Pair {
    store: MemoryStore,
    halves: [Partitions; 2],
    handles: [Arc<MemoryStorage>; 2],
}

fn pair() -> Pair {
    let store = MemoryStore::default();
    let halves = [
        Partitions::of(PARTITIONS, [0, 1]),
        Partitions::of(PARTITIONS, [2, 3]),
    ];
    let handles = [0, 1].map(|i| {
        let handle = Arc::new(store.open_shared(PARTITIONS));
        hand(&handle, &halves[i]);
        handle
    });
    Pair {
        store,
        halves,
        handles,
    }
}

fn start(storage: &Arc<MemoryStorage>, tally: &Tally) -> Engine {
    let storage = storage.clone() as Arc<dyn Storage>;
    Engine::start(storage, tally.registry(), test_config()).unwrap()
}

fn completed(storage: &MemoryStorage, id: &InvocationId) -> bool {
    let record = storage.invocation(id).unwrap();
    record.is_some_and(|r| matches!(r.status, Status::Completed { .. }))
}

/// The partition of `service`'s object `key`.
/// The state scope of `Tally`'s key `key`.
fn tally_scope(key: &str) -> StateScope {
    StateScope {
        service: "Tally".into(),
        key: key.into(),
    }
}

fn partition_of(service: &str, key: &str) -> u32 {
    (partition_key_of(service, key) % u64::from(PARTITIONS)) as u32
}

fn note(key: &str, delay: Option<Duration>) -> InvokeRequest {
    InvokeRequest {
        target: Target {
            service: "Tally".into(),
            handler: "note".into(),
            key: Some(key.into()),
        },
        input: Bytes::new(),
        headers: Vec::new(),
        idempotency_key: None,
        delay,
        relayed: None,
    }
}

/// Sends `Tally/{key}/note` to run after `delay`, if any.
async fn send(engine: &Engine, key: &str, delay: Option<Duration>) -> InvocationId {
    engine.send(note(key, delay)).await.unwrap().0
}

/// Sends `note` to forty keys at once: their ids, each with whether its partition is in
/// `half`.
async fn send_to_forty_keys(engine: &Engine, half: &Partitions) -> Vec<(bool, InvocationId)> {
    let mut ids = Vec::new();
    for i in 0..40 {
        let key = format!("k{i}");
        let held = half.contains(partition_of("Tally", &key));
        ids.push((held, send(engine, &key, None).await));
    }
    ids
}

/// A key `c{n}` of `service` in partition `partition`.
fn key_in(service: &str, partition: u32) -> String {
    (0..)
        .map(|n| format!("c{n}"))
        .find(|key| partition_of(service, key) == partition)
        .unwrap()
}

/// What a relay answered (its handlers return a string).
fn relayed(outcome: &Outcome) -> String {
    let Outcome::Success(bytes) = outcome else {
        panic!("the relay failed: {outcome:?}");
    };
    serde_json::from_slice(bytes).unwrap()
}

/// `Tally/{key}/note` as another process accepted it: a message for the inbox.
fn note_message(key: &str) -> crate::storage::InboxMessage {
    use crate::storage::records::InvocationRecord;
    let mut record = InvocationRecord::for_test("Tally", Some(key), Status::Runnable);
    record.target.handler = "note".into();
    crate::storage::InboxMessage::Invoke(Box::new(record))
}

/// Another process accepts `Tally/{key}/note` as `id`: its message commits into the inbox
/// as this process's next inbox check for that key begins.
fn accepted_elsewhere_at_next_check(
    storage: &Arc<crate::storage::MemoryStorage>,
    id: InvocationId,
    key: &str,
) {
    let (inbox, message) = (storage.clone(), note_message(key));
    storage.before_next_inbox_check_of(id.partition_key(), move || {
        drop(inbox.submit(vec![WriteOp::forward(id, &message)]));
    });
}

/// An engine of `tally` on a fresh database of the tests' PostgreSQL cluster, running all
/// its partitions, with a connection of the test's own to that database; `None` where
/// PostgreSQL is not installed.
#[cfg(feature = "postgres")]
async fn on_postgres(
    tally: &Tally,
) -> Option<(
    Arc<crate::storage::PostgresStorage>,
    Engine,
    tokio_postgres::Client,
)> {
    use crate::storage::{PostgresOptions, PostgresStorage};
    let url = crate::testing::PostgresCluster::for_tests()?
        .fresh_database()
        .unwrap();
    let options = PostgresOptions {
        partitions: PARTITIONS,
        ..Default::default()
    };
    let opened = url.clone();
    let storage = tokio::task::spawn_blocking(move || PostgresStorage::open(&opened, &options))
        .await
        .unwrap()
        .unwrap();
    let storage = Arc::new(storage);
    let engine = Engine::start(storage.clone(), tally.registry(), test_config()).unwrap();
    until("the partitions run here", || {
        (0..PARTITIONS).all(|p| engine.runs(&InvocationId::random(u64::from(p))))
    })
    .await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    Some((storage, engine, client))
}

/// Another process accepts `Tally/{key}/note` as `id`: its message commits into the inbox
/// (no notification is sent).
#[cfg(feature = "postgres")]
async fn accept_elsewhere(client: &tokio_postgres::Client, id: InvocationId, key: &str) {
    let message = crate::storage::records::encode(&note_message(key));
    let partition_key = id.partition_key() as i64;
    client
        .execute(
            "INSERT INTO restate_inbox (partition_key, id, starts, message) \
             VALUES ($1, $2, true, $3)",
            &[&partition_key, &id.storage_key().to_vec(), &message],
        )
        .await
        .unwrap();
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Delayed invocations accepted, then every partition leaves: nothing fires. Half of them
/// come back: that half's invocations run, those of the other half (due earlier) do not.
/// The rest come back: those run too, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_only_in_the_partitions_held_and_once_where_they_come_back() {
    let store = MemoryStore::default();
    let storage = Arc::new(store.open(PARTITIONS));
    let (tally, _open) = Tally::new(true);
    let engine = start(&storage, &tally);
    let half = Partitions::of(PARTITIONS, [0, 1]);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let (mut held, mut other) = (Vec::new(), Vec::new());
    for key in &keys {
        // The other half falls due first: had its timers been loaded, they would fire
        // before the held half's.
        match half.contains(partition_of("Tally", key)) {
            true => held.push(send(&engine, key, Some(Duration::from_secs(2))).await),
            false => other.push(send(&engine, key, Some(Duration::from_secs(1))).await),
        }
    }
    assert!(!held.is_empty() && !other.is_empty(), "keys in both halves");
    storage.set_owned(Partitions::none(PARTITIONS));
    until("every partition left", || engine.owned().is_empty()).await;
    storage.fence();
    assert!(held.iter().chain(&other).all(|id| tally.runs(id) == 0));

    storage.set_owned(half.clone());
    until("the held half ran", || {
        held.iter().all(|id| tally.runs(id) > 0)
    })
    .await;
    assert!(engine.owned() == half);
    for id in &other {
        assert_eq!(
            tally.runs(id),
            0,
            "{id} of another process's partition ran here"
        );
    }

    storage.set_owned(Partitions::all(PARTITIONS));
    until("the other half ran", || {
        other.iter().all(|id| tally.runs(id) > 0)
    })
    .await;
    for id in held.iter().chain(&other) {
        assert_eq!(tally.runs(id), 1, "{id} ran more than once");
    }
    engine.shutdown();
}

/// After a crash, an engine handed half the partitions restores the invocations that were
/// running in that half only; handed the rest, it restores those too. Each completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_restores_only_the_partitions_held_and_the_rest_once_handed_over() {
    let store = MemoryStore::default();
    let first = Arc::new(store.open(PARTITIONS));
    let (tally, open) = Tally::new(false);
    let before = start(&first, &tally);
    let half = Partitions::of(PARTITIONS, [1, 2]);
    let ids = send_to_forty_keys(&before, &half).await;
    until("every invocation started", || {
        ids.iter().all(|(_, id)| tally.runs(id) == 1)
    })
    .await;
    before.shutdown();
    store.kill();

    let second = Arc::new(store.open(PARTITIONS));
    hand(&second, &half);
    let after = start(&second, &tally);
    open.send_replace(true);
    until("the held half completed", || {
        ids.iter()
            .filter(|(held, _)| *held)
            .all(|(_, id)| completed(&second, id))
    })
    .await;
    for (held, id) in &ids {
        let runs = if *held { 2 } else { 1 };
        assert_eq!(tally.runs(id), runs, "runs of {id} (held: {held})");
        assert_eq!(completed(&second, id), *held);
    }

    second.set_owned(Partitions::all(PARTITIONS));
    until("the rest completed", || {
        ids.iter().all(|(_, id)| completed(&second, id))
    })
    .await;
    for (_, id) in &ids {
        assert_eq!(
            tally.runs(id),
            2,
            "{id} ran once before the crash and once after"
        );
    }
    after.shutdown();
}

/// Partitions that leave take their invocations out of memory: a request waiting here on
/// one hears it is lost here, their tasks stop without completing them (the store would
/// refuse them anyway), and those of the partitions kept go on. When the partitions come
/// back, their invocations that were accepted durably run again and complete once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_leave_with_their_partition_and_complete_once_when_it_comes_back() {
    let store = MemoryStore::default();
    let storage = Arc::new(store.open(PARTITIONS));
    let (tally, open) = Tally::new(false);
    let engine = start(&storage, &tally);
    let half = Partitions::of(PARTITIONS, [0, 3]);
    let ids = send_to_forty_keys(&engine, &half).await;
    let call = |partition| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.call(note(&key_in("Tally", partition), None)).await })
    };
    let (kept_call, left_call) = (call(0), call(1));
    until("every invocation started", || {
        tally.runs.lock().unwrap().len() == ids.len() + 2
    })
    .await;

    storage.set_owned(half.clone());
    let lost = left_call.await.unwrap();
    assert!(
        matches!(&lost, Err(super::super::EngineError::Lost(why)) if why == super::LEFT),
        "a call whose partition left: {:?}",
        lost.map(|(id, ..)| id)
    );
    assert!(engine.owned() == half);
    open.send_replace(true);
    let (id, ..) = kept_call
        .await
        .unwrap()
        .expect("the call of a partition kept");
    assert_eq!(tally.runs(&id), 1);
    until("the kept half completed", || {
        ids.iter()
            .filter(|(kept, _)| *kept)
            .all(|(_, id)| completed(&storage, id))
    })
    .await;
    for (kept, id) in &ids {
        assert_eq!(completed(&storage, id), *kept, "{id} (kept: {kept})");
        assert_eq!(tally.runs(id), 1, "{id} (kept: {kept})");
    }
    // The tasks of those that left stopped where they waited.
    until("the kept half got past the gate", || {
        ids.iter()
            .filter(|(kept, _)| *kept)
            .all(|(_, id)| tally.passed(id) == 1)
    })
    .await;
    for (_, id) in ids.iter().filter(|(kept, _)| !kept) {
        assert_eq!(tally.passed(id), 0, "{id} went on after its partition left");
    }

    storage.set_owned(Partitions::all(PARTITIONS));
    until("the rest completed", || {
        ids.iter().all(|(_, id)| completed(&storage, id))
    })
    .await;
    for (kept, id) in &ids {
        let runs = if *kept { 1 } else { 2 };
        assert_eq!(tally.runs(id), runs, "runs of {id} (kept: {kept})");
        assert_eq!(tally.passed(id), 1, "{id} (kept: {kept}) got past once");
    }
    engine.shutdown();
}

/// A call waiting here on an invocation that was stored when its partition left follows it:
/// the process that runs the partition next (here, this one again) finishes it, and the call
/// answers with that result instead of "lost" (the invocation took effect); a call whose
/// invocation was never stored is still told it left, as nobody will run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_call_whose_partition_left_answers_with_the_result_from_the_next_owner() {
    let store = MemoryStore::default();
    let storage = Arc::new(store.open_shared(PARTITIONS));
    let (tally, open) = Tally::new(false);
    let engine = start(&storage, &tally);
    let call = |req: InvokeRequest| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.call(req).await })
    };
    let mut stored = note(&key_in("Tally", 1), None);
    stored.input = Bytes::from_static(STORED);
    let stored_call = call(stored);
    let unstored_call = call(note(&key_in("Tally", 2), None));
    let stored_id = || {
        let runs = tally.runs.lock().unwrap();
        runs.keys()
            .find(|id| storage.invocation(id).unwrap().is_some())
            .copied()
    };
    until("both started, one stored", || {
        tally.runs.lock().unwrap().len() == 2 && stored_id().is_some()
    })
    .await;
    let stored_id = stored_id().unwrap();

    storage.set_owned(Partitions::of(PARTITIONS, [0, 3]));
    let lost = unstored_call.await.unwrap();
    assert!(
        matches!(&lost, Err(e) if super::is_moved(e)),
        "a call never stored: {:?}",
        lost.map(|(id, ..)| id)
    );
    storage.set_owned(Partitions::all(PARTITIONS));
    open.send_replace(true);
    let (id, done, _) = stored_call
        .await
        .unwrap()
        .expect("the stored call answers with its result");
    assert_eq!(id, stored_id);
    assert_eq!(
        done.outcome,
        Outcome::Success(format!("\"{id}\"").into_bytes())
    );
    assert_eq!(
        tally.runs(&id),
        2,
        "run again by the partition's next owner"
    );
    assert_eq!(tally.passed(&id), 1);
    engine.shutdown();
}

/// A store's write to a partition whose lease its process lost is refused, and its process
/// drops every partition that write wrote, the others going on; one told it lost a partition
/// but not yet fenced still writes it (the process lets it go first).
#[tokio::test]
async fn a_write_to_a_partition_fenced_off_is_refused_and_drops_what_it_wrote() {
    let storage = MemoryStore::default().open(PARTITIONS);
    let (kept, other, third) = (key_in("Tally", 0), key_in("Tally", 1), key_in("Tally", 2));
    let put = |key: &str| WriteOp::SetState {
        scope: tally_scope(key),
        name: "n".into(),
        value: b"1".to_vec(),
    };
    // Told, not yet fenced: every partition is still written.
    storage.set_owned(Partitions::of(PARTITIONS, [0, 2]));
    storage.submit(vec![put(&kept), put(&other)]).await.unwrap();
    storage.fence();
    let refused = storage.submit(vec![put(&kept), put(&other)]).await;
    assert!(matches!(refused, Err(StorageError::Backend(why)) if why.contains("partition 1")));
    assert!(storage.failure().borrow().is_none(), "the store stopped");
    assert_eq!(
        *storage.owned().borrow(),
        Partitions::of(PARTITIONS, [2]),
        "the partitions the refused write wrote are dropped, the others kept"
    );
    storage.submit(vec![put(&third)]).await.unwrap();
    assert_eq!(
        storage.state(&tally_scope(&other), "n").unwrap(),
        Some(b"1".to_vec())
    );
}

/// A partition another process takes over while this one still runs it (paused past its
/// lease, this process hears of it only from a refused write): the refusal drops that
/// partition here, and the others the refused write wrote; nothing stops, the partitions
/// left go on. Given back, they are recovered and what was running completes once: a plain
/// invocation, the one queued behind it on its key, and a call whose result's write crossed
/// into a partition taken away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_taken_over_unannounced_is_dropped_and_the_rest_goes_on() {
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, gate) = Tally::new(false);
    let engine = start(&a, &tally);
    let (k0, k1) = (key_in("Tally", 0), key_in("Tally", 1));
    let first = send(&engine, &k0, None).await;
    let second = send(&engine, &k0, None).await;
    let beside = send(&engine, &k1, None).await;
    until("the first of the key and the one beside it run", || {
        tally.runs(&first) == 1 && tally.runs(&beside) == 1
    })
    .await;
    let zero = Partitions::of(PARTITIONS, [0]);
    a.take_away(&zero);
    gate.send_replace(true);
    until("the one beside completed", || completed(&a, &beside)).await;
    until("partition 0 dropped and left", || {
        let now = a_half.without(&zero);
        *a.owned().borrow() == now && a.left_on(&now, 0).1
    })
    .await;
    assert!(a.failure().borrow().is_none(), "the store stopped");
    assert!(!completed(&a, &first) && !completed(&a, &second));
    // The partition left goes on taking work.
    let later = send(&engine, &k1, None).await;
    until("later work beside completed", || completed(&a, &later)).await;
    // Given back (as after the other process stopped), it is recovered here.
    a.set_owned(a_half.clone());
    until("the key's invocations completed", || {
        completed(&a, &first) && completed(&a, &second)
    })
    .await;
    assert_eq!(output(&a, &first), Some(first.to_string()));
    assert_eq!(output(&a, &second), Some(second.to_string()));

    // A call whose callee's end writes the caller's partition too, taken away meanwhile: both
    // partitions are dropped (the callee's end was its only record of having run).
    gate.send_replace(false);
    let (from, to) = (key_in("Relay", 0), key_in("Tally", 1));
    let relay_id = engine.send(relay("call", &from, &to)).await.unwrap().0;
    until("the callee runs", || tally.runs.lock().unwrap().len() == 5).await;
    a.take_away(&zero);
    gate.send_replace(true);
    until("both partitions dropped and left", || {
        let none = Partitions::none(PARTITIONS);
        a.owned().borrow().is_empty() && a.left_on(&none, 0).1
    })
    .await;
    assert!(a.failure().borrow().is_none(), "the store stopped");
    a.set_owned(a_half.clone());
    until("the relay completed", || output(&a, &relay_id).is_some()).await;
    let callee: InvocationId = output(&a, &relay_id).unwrap().parse().unwrap();
    assert_eq!(output(&a, &callee), Some(callee.to_string()));
    let tallies = a
        .invocations(None, 1000)
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.target.service == "Tally")
        .count();
    assert_eq!(
        tallies, 5,
        "one callee for the relay, beside the four notes"
    );
    engine.shutdown();
}

/// `call` within 20 s, or the test fails.
async fn within<T>(call: impl std::future::Future<Output = T>) -> T {
    let deadline = Duration::from_secs(20);
    tokio::time::timeout(deadline, call)
        .await
        .expect("no answer within 20 s")
}

fn relay(handler: &str, key: &str, to: &str) -> InvokeRequest {
    InvokeRequest {
        target: Target {
            service: "Relay".into(),
            handler: handler.into(),
            key: Some(key.into()),
        },
        input: Bytes::from(serde_json::to_vec(to).unwrap()),
        headers: Vec::new(),
        idempotency_key: None,
        delay: None,
        relayed: None,
    }
}

/// Two processes on one shared store, each running half the partitions. A handler's call
/// to an object of the other half is created there through its inbox, with the caller's
/// entry, and its result comes back through the caller's inbox; a send likewise. Requests
/// from outside reach whichever process runs their key, through either process. Every
/// callee runs once, and every call gets its own callee's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_sends_cross_partitions_through_the_inboxes_and_run_once() {
    let Pair {
        halves: [a_half, b_half],
        handles: [a, b],
        ..
    } = pair();
    let (tally, _open) = Tally::new(true);
    let (engine_a, engine_b) = (start(&a, &tally), start(&b, &tally));
    let in_half = |service: &str, half: &Partitions, n: usize, prefix: &str| -> Vec<String> {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|key| half.contains(partition_of(service, key)))
            .take(n)
            .collect()
    };
    let mut calls = Vec::new();
    for (i, (from, to)) in in_half("Relay", &a_half, 6, "r")
        .iter()
        .zip(in_half("Tally", &b_half, 6, "t"))
        .enumerate()
    {
        // Through the process that runs the relay, and through the other one.
        let via = if i % 2 == 0 { &engine_a } else { &engine_b };
        let (_, done, _) = within(via.call(relay("call", from, &to))).await.unwrap();
        let crate::storage::Outcome::Success(bytes) = &done.outcome else {
            panic!("a relayed call failed: {:?}", done.outcome);
        };
        let callee: String = serde_json::from_slice(bytes).unwrap();
        calls.push((to, callee.parse::<InvocationId>().unwrap()));
    }
    for (to, callee) in &calls {
        assert!(
            b_half.holds(callee),
            "the callee of Tally/{to} is in its key's partition"
        );
        assert_eq!(tally.runs(callee), 1, "Tally/{to} ran once");
        assert!(completed(&b, callee));
    }
    // Calls the other way, and sends both ways.
    for (from, to) in in_half("Relay", &b_half, 3, "s")
        .iter()
        .zip(in_half("Tally", &a_half, 3, "u"))
    {
        let (_, done, _) = within(engine_b.call(relay("call", from, &to)))
            .await
            .unwrap();
        let crate::storage::Outcome::Success(bytes) = &done.outcome else {
            panic!("a relayed call failed: {:?}", done.outcome);
        };
        let callee: String = serde_json::from_slice(bytes).unwrap();
        assert!(a_half.holds(&callee.parse().unwrap()));
    }
    let mut sent = Vec::new();
    for (from, to) in in_half("Relay", &a_half, 4, "v")
        .iter()
        .zip(in_half("Tally", &b_half, 4, "w"))
    {
        let (_, done, _) = within(engine_a.call(relay("send", from, &to)))
            .await
            .unwrap();
        let crate::storage::Outcome::Success(bytes) = &done.outcome else {
            panic!("a relayed send failed: {:?}", done.outcome);
        };
        let id: String = serde_json::from_slice(bytes).unwrap();
        sent.push(id.parse::<InvocationId>().unwrap());
    }
    until("every sent invocation ran where its partition runs", || {
        sent.iter().all(|id| completed(&b, id))
    })
    .await;
    for id in &sent {
        assert_eq!(tally.runs(id), 1);
    }
    engine_a.shutdown();
    engine_b.shutdown();
}

/// The output of a completed invocation, as a string.
fn output(storage: &MemoryStorage, id: &InvocationId) -> Option<String> {
    stored_output(storage, id).unwrap()
}

/// [`output`], or the error of a read through a handle whose process was killed.
fn stored_output(
    storage: &MemoryStorage,
    id: &InvocationId,
) -> Result<Option<String>, StorageError> {
    Ok(match storage.invocation(id)?.map(|record| record.status) {
        Some(Status::Completed {
            outcome: crate::storage::Outcome::Success(bytes),
            ..
        }) => Some(serde_json::from_slice(&bytes).unwrap()),
        _ => None,
    })
}

/// A crash at every commit of a call across partitions (the caller's entry with the
/// message that creates the callee, the callee's record, its completion with the message
/// that carries its result back, that result's entry with the caller's wake-up, the inbox
/// messages' removals, the caller's end): after the restart of both processes, the
/// accepted caller completes with the result of the one callee it recorded, and exactly
/// one callee completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_commit_of_a_call_across_partitions_loses_and_doubles_nothing() {
    let (a_half, b_half) = (
        Partitions::of(PARTITIONS, [0, 1]),
        Partitions::of(PARTITIONS, [2, 3]),
    );
    let (from, to) = (key_in("Relay", 0), key_in("Tally", 2));
    let config = || EngineConfig {
        on_storage_failure: |_| {},
        ..test_config()
    };
    let mut crashed_at = Vec::new();
    for n in 1..=16 {
        let store = MemoryStore::default();
        let (tally, _open) = Tally::new(true);
        let processes = || {
            let (a, b) = (
                Arc::new(store.open_shared(PARTITIONS)),
                Arc::new(store.open_shared(PARTITIONS)),
            );
            hand(&a, &a_half);
            hand(&b, &b_half);
            let start = |s: &Arc<MemoryStorage>| {
                let storage = s.clone() as Arc<dyn Storage>;
                Engine::start(storage, tally.registry(), config()).unwrap()
            };
            let engines = (start(&a), start(&b));
            (a, engines)
        };
        let (_, (engine_a, engine_b)) = processes();
        store.kill_after_commits(n);
        let accepted = engine_a
            .send(relay("call", &from, &to))
            .await
            .map(|(id, ..)| id);
        if let Ok(relay_id) = accepted {
            let a = store.open(PARTITIONS);
            // The kill may come between the two reads: `a`, opened before it, is dead then.
            until("the relay completed or the store was killed", || {
                store.kills() > 0
                    || stored_output(&a, &relay_id).map_or_else(
                        |e| {
                            assert!(store.kills() > 0, "reading the relay failed: {e}");
                            true
                        },
                        |output| output.is_some(),
                    )
            })
            .await;
        }
        engine_a.shutdown();
        engine_b.shutdown();
        if store.kills() > 0 {
            crashed_at.push(n);
        }
        // The restart follows a kill whether or not the flow had one: `shutdown` only
        // signals, so the old engines may still commit (the flow's last commit, an idle
        // lane's barrier, can come after the relay's end), and a kill still armed would fire
        // on the new handles, opened at the same count. The kill stops the old writes and
        // disarms it.
        store.kill();
        let (a, (after_a, after_b)) = processes();
        if let Ok(relay_id) = accepted {
            until("the relay completed after the restart", || {
                output(&a, &relay_id).is_some()
            })
            .await;
            let callee: InvocationId = output(&a, &relay_id).unwrap().parse().unwrap();
            assert_eq!(
                output(&a, &callee),
                Some(callee.to_string()),
                "crash at commit {n}"
            );
            let tallies: Vec<_> = a
                .invocations(None, 1000)
                .unwrap()
                .into_iter()
                .filter(|(_, r)| r.target.service == "Tally")
                .collect();
            assert_eq!(
                tallies.len(),
                1,
                "crash at commit {n}: one callee, {tallies:?}"
            );
        }
        after_a.shutdown();
        after_b.shutdown();
    }
    // The sweep went past the end of the flow: every commit of it was a crash point.
    assert!(crashed_at.len() < 16, "crashes at {crashed_at:?}");
    assert!(crashed_at.len() >= 6, "crashes at {crashed_at:?}");
}

/// Across partitions, an attach to an invocation still running is completed by its owner
/// when it ends, and a cancel reaches an invocation queued there (it ends at once, never
/// having run) and the attach to it gets the cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaches_and_cancels_cross_partitions_through_the_inboxes() {
    let Pair {
        halves: [_, b_half],
        handles: [a, b],
        ..
    } = pair();
    let (tally, open) = Tally::new(false);
    let (engine_a, engine_b) = (start(&a, &tally), start(&b, &tally));
    let (from, to) = (key_in("Relay", 0), key_in("Tally", 2));
    let attach = {
        let engine = engine_a.clone();
        let (from, to) = (from.clone(), to.clone());
        tokio::spawn(async move { engine.call(relay("attach", &from, &to)).await })
    };
    until("the attached invocation runs", || {
        tally.runs.lock().unwrap().len() == 1
    })
    .await;
    let other_relay = key_in("Relay", 1);
    let (_, cancelled, _) = within(engine_a.call(relay("cancel", &other_relay, &to)))
        .await
        .unwrap();
    assert!(
        matches!(&cancelled.outcome, crate::storage::Outcome::Success(code) if code == b"\"409\""),
        "{:?}",
        cancelled.outcome
    );
    assert_eq!(
        tally.runs.lock().unwrap().len(),
        1,
        "the cancelled one never ran"
    );
    open.send_replace(true);
    let (_, attached, _) = within(attach).await.unwrap().unwrap();
    let crate::storage::Outcome::Success(bytes) = &attached.outcome else {
        panic!("the attach failed: {:?}", attached.outcome);
    };
    let noted: String = serde_json::from_slice(bytes).unwrap();
    let noted: InvocationId = noted.parse().unwrap();
    assert_eq!(tally.runs(&noted), 1);
    assert!(b_half.holds(&noted));
    // The first of the cancelling relay's two sends runs once the key is free.
    until("the rest ran", || tally.passed.lock().unwrap().len() == 2).await;
    engine_a.shutdown();
    engine_b.shutdown();
}

/// An attach to an invocation of a partition this process runs, not in memory and not
/// stored at the first read, whose inbox message is applied (its record stored, then the
/// message removed) before the inbox is read: the store, read again, has it. Read once, the
/// attach would answer "not found" for an invocation that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_racing_the_inbox_that_creates_its_target_finds_it() {
    let Pair {
        handles: [_, b], ..
    } = pair();
    let (tally, _open) = Tally::new(true);
    let engine = start(&b, &tally);
    let id = InvocationId::random(partition_key_of("Tally", &key_in("Tally", 2)));
    let applied = b.clone();
    b.before_next_inbox_check(move || {
        let status = Status::Completed {
            outcome: crate::storage::Outcome::Success(b"\"done\"".to_vec()),
            completed_at_ms: 1,
            expires_at_ms: u64::MAX,
        };
        let record = crate::storage::InvocationRecord::for_test("Tally", Some("k"), status);
        drop(applied.submit(vec![WriteOp::put_new_invocation(id, &record)]));
    });
    let attached = within(engine.attach_here(id)).await.unwrap();
    let outcome = attached.map(|done| done.outcome.clone());
    assert_eq!(
        outcome,
        Some(crate::storage::Outcome::Success(b"\"done\"".to_vec())),
        "the attach missed an invocation applied between its reads"
    );
    engine.shutdown();
}

/// Each process purges the finished invocations of the partitions it runs, and only
/// those (a delete of another's would be refused, and the whole purge with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_purges_the_partitions_it_runs() {
    let Pair {
        halves: [a_half, b_half],
        handles: [a, b],
        ..
    } = pair();
    let (tally, _open) = Tally::new(true);
    let (engine_a, engine_b) = (start(&a, &tally), start(&b, &tally));
    // `note` keeps no result (the runtime's own handlers' retention is zero).
    let mut ids = Vec::new();
    for i in 0..20 {
        let key = format!("p{i}");
        let engine = match a_half.contains(partition_of("Tally", &key)) {
            true => &engine_a,
            false => &engine_b,
        };
        ids.push(within(engine.call(note(&key, None))).await.unwrap().0);
    }
    let stored = |id: &InvocationId| a.invocation(id).unwrap().is_some();
    assert!(ids.iter().all(stored));
    engine_a.purge_due().await;
    for id in &ids {
        assert_eq!(
            stored(id),
            b_half.holds(id),
            "{id} after the first process purged"
        );
    }
    engine_b.purge_due().await;
    assert!(!ids.iter().any(stored));
    engine_a.shutdown();
    engine_b.shutdown();
}

/// A caller that suspended while its callee runs in another process is woken there by the
/// result's message (its wake-up committed with the entry, law 9) and completes by replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_caller_is_woken_by_a_result_from_another_partition() {
    let Pair {
        halves: [_, b_half],
        handles: [a, b],
        ..
    } = pair();
    let (tally, open) = Tally::new(false);
    let quick = EngineConfig {
        suspend_after: Duration::from_millis(1),
        ..test_config()
    };
    let engine_a = Engine::start(a.clone() as Arc<dyn Storage>, tally.registry(), quick).unwrap();
    let engine_b = start(&b, &tally);
    let (from, to) = (key_in("Relay", 0), key_in("Tally", 2));
    let call = {
        let engine = engine_a.clone();
        tokio::spawn(async move { engine.call(relay("call", &from, &to)).await })
    };
    let suspended_relay = || {
        a.invocations(None, 100).unwrap().into_iter().any(|(_, r)| {
            r.target.service == "Relay" && matches!(r.status, Status::Suspended { .. })
        })
    };
    until("the relay suspended", suspended_relay).await;
    open.send_replace(true);
    let (_, done, _) = within(call).await.unwrap().unwrap();
    let crate::storage::Outcome::Success(bytes) = &done.outcome else {
        panic!("the relayed call failed: {:?}", done.outcome);
    };
    let callee: InvocationId = serde_json::from_slice::<String>(bytes)
        .unwrap()
        .parse()
        .unwrap();
    assert!(b_half.holds(&callee));
    assert_eq!(tally.runs(&callee), 1);
    engine_a.shutdown();
    engine_b.shutdown();
}

/// Partitions moving back and forth between two processes while relays call across them:
/// seeded (`PARTITION_MOVES_SEED` replays a run), each move a partition leaving one
/// process (its engine lets go) before the other takes it. Every relay accepted completes
/// with the result of the one callee it recorded, and no callee is created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_across_partitions_survive_partitions_moving_between_processes() {
    use rand::{Rng as _, SeedableRng as _};
    let seed = std::env::var("PARTITION_MOVES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("partition moves seed {seed} (PARTITION_MOVES_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Pair {
        store,
        halves: mut sets,
        handles,
    } = pair();
    let (tally, _open) = Tally::new(true);
    let engines = [start(&handles[0], &tally), start(&handles[1], &tally)];
    let mut relays = Vec::new();
    for round in 0..12 {
        for i in 0..8 {
            let (from, to) = (
                format!("r{round}-{i}"),
                format!("t{}", rng.random_range(0..6)),
            );
            let via = &engines[rng.random_range(0..2)];
            let sent = within(via.send(relay("call", &from, &to))).await.unwrap().0;
            relays.push(sent);
        }
        // A partition leaves its process, then the other one takes it.
        let from = rng.random_range(0..2);
        let Some(partition) = sets[from]
            .iter()
            .nth(rng.random_range(0..sets[from].len().max(1)))
        else {
            continue;
        };
        let moved = Partitions::of(PARTITIONS, [partition]);
        sets[from] = sets[from].without(&moved);
        let (since, _) = handles[from].left_on(&sets[from], 0);
        handles[from].set_owned(sets[from].clone());
        // Fenced only once its engine said it left the partition (what ran there stopped and
        // its writes are decided), as a shared database releases a lease.
        until("the partition left", || {
            handles[from].left_on(&sets[from], since).1
        })
        .await;
        handles[from].fence();
        let to = 1 - from;
        sets[to] = sets[to].with(&moved);
        handles[to].set_owned(sets[to].clone());
    }
    let reader = store.open(PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !relays.iter().all(|id| output(&reader, id).is_some()) {
        if Instant::now() > deadline {
            panic!(
                "relays unfinished (seed {seed}, partitions {sets:?}):\n{}",
                unfinished_report(&reader, &relays, &sets, &engines)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for relay in &relays {
        let callee: InvocationId = output(&reader, relay).unwrap().parse().unwrap();
        assert_eq!(
            output(&reader, &callee),
            Some(callee.to_string()),
            "seed {seed}"
        );
    }
    let callees = reader
        .invocations(None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.target.service == "Tally")
        .count();
    assert_eq!(callees, relays.len(), "one callee per relay (seed {seed})");
    for engine in &engines {
        engine.shutdown();
    }
}

/// What the store holds of the invocations among `ids` that did not complete, and of what
/// they wait on: their records, journals and the inbox, for a failure to show where they stopped.
fn unfinished_report(
    storage: &MemoryStorage,
    ids: &[InvocationId],
    sets: &[Partitions],
    engines: &[Engine],
) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    let mut report = String::new();
    let describe = |id: &InvocationId| {
        let owner = sets.iter().position(|set| set.holds(id));
        let record = storage.invocation(id).unwrap();
        let journal = storage.journal(id).unwrap();
        let mut memory = String::new();
        for (n, engine) in engines.iter().enumerate() {
            if let Some(f) = engine.inflight.lock().unwrap().get(id) {
                memory += &format!(
                    " [engine {n}: running {} queued {} left {} finished {}]",
                    f.running.load(SeqCst),
                    f.queued.load(SeqCst),
                    f.left.load(SeqCst),
                    f.finished.load(SeqCst)
                );
            }
            if let Some(r) = &record
                && let Some(lane) = engine.lanes.lock().unwrap().get(&StateScope {
                    service: r.target.service.clone(),
                    key: r.target.key.clone().unwrap_or_default(),
                })
            {
                memory += &format!(
                    " [engine {n} lane: running {:?} queued {:?}]",
                    lane.running,
                    lane.queued_ids()
                );
            }
        }
        format!(
            "{id} (process {owner:?}): {:?}{memory}\n    journal {journal:?}\n",
            record.map(|r| r.status)
        )
    };
    for id in ids.iter().filter(|id| output(storage, id).is_none()) {
        report += &describe(id);
        for (_, entry) in storage.journal(id).unwrap() {
            if let crate::storage::JournalEntry::Call { invocation_id, .. } = entry {
                report += &format!("  callee {}", describe(&invocation_id));
            }
        }
    }
    for (n, engine) in engines.iter().enumerate() {
        let lanes: Vec<_> = engine
            .lanes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(scope, lane)| Some((scope.clone(), lane.running?)))
            .collect();
        for (scope, holder) in lanes {
            let status = storage.invocation(&holder).unwrap().map(|r| r.status);
            let memory = engine.inflight.lock().unwrap().get(&holder).map(|f| {
                (
                    f.running.load(SeqCst),
                    f.queued.load(SeqCst),
                    f.left.load(SeqCst),
                    f.finished.load(SeqCst),
                )
            });
            report += &format!(
                "engine {n} lane {}/{} held by {holder}: {status:?}, in memory \
                 (running, queued, left, finished) {memory:?}\n",
                scope.service, scope.key
            );
        }
    }
    report += &format!("inbox {:?}", storage.inbox(100, usize::MAX).unwrap());
    report
}

/// A handler's send to an object key whose partition runs here, while a message for that key
/// that another process accepted first waits in the inbox, goes through the inbox behind it
/// (per-key order across processes), and a cancel of it right after, while it is still a
/// message, follows it there: both are applied in that order, nothing is left behind.
#[tokio::test]
async fn a_send_to_a_key_behind_its_inbox_messages_waits_there_and_its_cancel_follows_it() {
    use super::super::Created;
    use crate::storage::records::InvocationRecord;
    use crate::storage::{InboxMessage, records};
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, _open) = Tally::new(true);
    let key = key_in("Tally", a_half.iter().next().unwrap());
    // Accepted first by the other process: a message in the inbox of this key's partition.
    let first = InvocationId::random(partition_key_of("Tally", &key));
    let mut record = InvocationRecord::for_test("Tally", Some(&key), Status::Runnable);
    record.target.handler = "note".into();
    a.forward(first, InboxMessage::Invoke(Box::new(record)))
        .await
        .unwrap();
    // On this one-threaded runtime the engine applies nothing before the next await.
    let engine = start(&a, &tally);
    let created = engine.submit_recorded(note(&key, None), None).unwrap();
    let Created::Elsewhere(second, forward) = created else {
        panic!("made here, ahead of the message accepted first");
    };
    assert!(a_half.holds(&second), "its key's partition runs here");
    let forwarded = |op: &WriteOp| match op {
        WriteOp::Forward { id, encoded } if *id == second => {
            Some(records::decode::<InboxMessage>(encoded).unwrap())
        }
        _ => None,
    };
    assert!(matches!(forwarded(&forward), Some(InboxMessage::Invoke(_))));
    let cancel = engine.cancel_request_ops(second);
    assert!(
        cancel
            .iter()
            .any(|op| matches!(forwarded(op), Some(InboxMessage::Cancel))),
        "the cancel does not follow it into the inbox: {cancel:?}"
    );
    let mut ops = vec![forward];
    ops.extend(cancel);
    a.submit(ops).await.unwrap();
    until("both messages applied", || {
        a.invocation(&first).unwrap().is_some()
            && a.invocation(&second).unwrap().is_some()
            && a.inbox(10, usize::MAX).unwrap().is_empty()
    })
    .await;
    let seq = |id: &InvocationId| a.invocation(id).unwrap().unwrap().seq;
    assert!(seq(&first) < seq(&second), "taken in out of order");
    until("the first ran", || tally.runs(&first) == 1).await;
    engine.shutdown();
}

/// A message for an object key that another process accepted just as a handler's sends to
/// that key were being placed: the commit of the first send reads it in the inbox, so both
/// sends go behind it through the inbox, in send order, and the cancel of the second follows
/// it there. The message runs first, the first send once; the copies made in memory before
/// their place was known never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_placed_behind_a_message_waiting_in_their_keys_inbox_run_after_it_in_order() {
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, open) = Tally::new(false);
    let engine = start(&a, &tally);
    let partition = a_half.iter().next().unwrap();
    let key = key_in("Tally", partition);
    let first = InvocationId::random(partition_key_of("Tally", &key));
    accepted_elsewhere_at_next_check(&a, first, &key);
    let relay_key = key_in("Relay", partition);
    let (_, cancelled, _) = within(engine.call(relay("cancel", &relay_key, &key)))
        .await
        .unwrap();
    assert!(
        matches!(&cancelled.outcome, Outcome::Success(code) if code == b"\"409\""),
        "{:?}",
        cancelled.outcome
    );
    until("the message accepted first runs", || {
        tally.runs(&first) == 1
    })
    .await;
    assert_eq!(
        tally.runs.lock().unwrap().len(),
        1,
        "a send ran ahead of the message its key's inbox held first"
    );
    open.send_replace(true);
    until("the first send ran", || {
        tally.passed.lock().unwrap().len() == 2
    })
    .await;
    until("the inbox is empty", || {
        a.inbox(10, usize::MAX).unwrap().is_empty()
    })
    .await;
    let runs = tally.runs.lock().unwrap().clone();
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    assert_eq!(runs.len(), 2, "the cancelled send ran: {runs:?}");
    engine.shutdown();
}

/// On PostgreSQL a send is placed by its entry's commit, which reads the inbox after the send
/// queued on its key. A message for that key, accepted first by another process, that this
/// process takes in from the inbox (and that leaves the inbox) between the two, queues behind
/// the send in memory and is gone from the commit's read: it overtakes the send, which goes
/// behind it through the inbox. Without that, the send ran first.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_taken_in_while_a_send_to_its_key_is_placed_runs_before_that_send() {
    let (tally, open) = Tally::new(false);
    let Some((storage, engine, client)) = on_postgres(&tally).await else {
        return;
    };
    let key = key_in("Tally", 0);
    let scope = tally_scope(&key);
    let first = InvocationId::random(partition_key_of("Tally", &key));
    let (watched, message_key) = (engine.clone(), key.clone());
    storage.before_next_placing(Box::pin(async move {
        until("the send queued on its key", || {
            watched.lane_view(&scope, &first).0 == 1
        })
        .await;
        accept_elsewhere(&client, first, &message_key).await;
        client
            .execute("SELECT pg_notify('restate_inbox', '')", &[])
            .await
            .unwrap();
        until("the message queued behind the send and overtook it", || {
            watched.lane_view(&scope, &first) == (0, true)
        })
        .await;
        // As the owner's removal of applied messages would, before the commit's read.
        client
            .execute(
                "DELETE FROM restate_inbox WHERE id = $1",
                &[&first.storage_key().to_vec()],
            )
            .await
            .unwrap();
    }));
    let relay_key = key_in("Relay", 1);
    let (_, sent, _) = within(engine.call(relay("send", &relay_key, &key)))
        .await
        .unwrap();
    let sent: InvocationId = relayed(&sent.outcome).parse().unwrap();
    until("one of the two runs", || {
        !tally.runs.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        (tally.runs(&first), tally.runs(&sent)),
        (1, 0),
        "the send ran ahead of the message that overtook it"
    );
    open.send_replace(true);
    until("both ran", || tally.passed.lock().unwrap().len() == 2).await;
    assert_eq!((tally.runs(&first), tally.runs(&sent)), (1, 1));
    engine.shutdown();
}

/// The copy of a moved send that waits behind a running invocation on its key leaves memory
/// and that queue as the copy taken in from the inbox comes (it stayed queued, its input
/// counted twice, until the holder ended), and its leaving tells nobody waiting on the copy
/// that runs. An attach from outside waits for that copy's end, and a kill of it ends it
/// (their finish channel once said "moved" to both: the attach followed it without end and
/// the kill was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_send_leaving_late_leaves_its_inbox_copy_to_its_waiters() {
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, _open) = Tally::new(false);
    let engine = start(&a, &tally);
    let partition = a_half.iter().next().unwrap();
    let key = key_in("Tally", partition);
    let holder = send(&engine, &key, None).await;
    until("the key's holder runs", || tally.runs(&holder) == 1).await;
    let first = InvocationId::random(partition_key_of("Tally", &key));
    accepted_elsewhere_at_next_check(&a, first, &key);
    let relay_key = key_in("Relay", partition);
    let (_, sent, _) = within(engine.call(relay("send", &relay_key, &key)))
        .await
        .unwrap();
    let sent: InvocationId = relayed(&sent.outcome).parse().unwrap();
    let scope = tally_scope(&key);
    // Taken-in invocations enter the in-flight map under its lock and their key's queue
    // only after it is released: wait for the queue itself.
    let waiting = || {
        let lanes = engine.lanes.lock().unwrap();
        lanes.get(&scope).map_or_else(Vec::new, |lane| {
            (lane.loaded())
                .map(|f| (f.id, f.moved_to_inbox()))
                .collect::<Vec<_>>()
        })
    };
    until("both inbox copies are queued", || {
        let queue = waiting();
        queue.contains(&(first, false)) && queue.contains(&(sent, false))
    })
    .await;
    let queued: Vec<InvocationId> = waiting().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        queued,
        vec![first, sent],
        "the moved copy left its key's queue"
    );
    let attacher = engine.clone();
    let attach = tokio::spawn(async move { attacher.attach(sent).await });
    within(engine.kill(holder)).await.unwrap();
    until("the message accepted first runs", || {
        tally.runs(&first) == 1
    })
    .await;
    within(engine.kill(first)).await.unwrap();
    until("the send runs", || tally.runs(&sent) == 1).await;
    within(engine.kill(sent))
        .await
        .expect("the kill of the copy that runs");
    let attached = within(attach).await.unwrap().unwrap().expect("known");
    assert!(
        matches!(&attached.outcome, Outcome::Failure { code: 409, .. }),
        "{:?}",
        attached.outcome
    );
    assert_eq!(tally.runs(&sent), 1);
    engine.shutdown();
}

/// A handler's send to an object key, then its call to the same key: the call is decided
/// (here or through the inbox) before the send's commit places the send. A message for the
/// key that another process put in the inbox in between puts the send behind it; the call
/// follows the send through the inbox, not ahead of it (sends and calls from one handler
/// to a key arrive in their order).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_a_send_to_one_key_stays_behind_it_when_the_send_goes_into_the_inbox() {
    use crate::storage::records::JournalEntry;
    let (tally, open) = Tally::new(false);
    let Some((storage, engine, client)) = on_postgres(&tally).await else {
        return;
    };
    let key = key_in("Tally", 0);
    let first = InvocationId::random(partition_key_of("Tally", &key));
    let (watched, message_key) = (engine.clone(), key.clone());
    storage.before_next_placing(Box::pin(async move {
        until("the call is made", || {
            let map = watched.inflight.lock().unwrap();
            map.values().any(|f| {
                (f.state().journal.iter()).any(|(_, e)| matches!(e, JournalEntry::Call { .. }))
            })
        })
        .await;
        accept_elsewhere(&client, first, &message_key).await;
    }));
    let (caller, relay_key) = (engine.clone(), key_in("Relay", 1));
    let relaying =
        tokio::spawn(async move { caller.call(relay("send-call", &relay_key, &key)).await });
    until("the first note runs", || {
        !tally.order.lock().unwrap().is_empty()
    })
    .await;
    open.send_replace(true);
    let (_, done, _) = within(relaying).await.unwrap().unwrap();
    let ids: Vec<InvocationId> = (relayed(&done.outcome).split(' '))
        .map(|id| id.parse().unwrap())
        .collect();
    until("all three ran", || tally.passed.lock().unwrap().len() == 3).await;
    let order = tally.order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![first, ids[0], ids[1]],
        "not in acceptance and send order"
    );
    engine.shutdown();
}

/// A send placed by its entry's commit is counted as started once: when its gate opens
/// here, not also as it queued on its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_send_is_counted_as_started_once() {
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, _open) = Tally::new(true);
    let engine = start(&a, &tally);
    let partition = a_half.iter().next().unwrap();
    let (key, relay_key) = (key_in("Tally", partition), key_in("Relay", partition));
    within(engine.call(relay("send", &relay_key, &key)))
        .await
        .unwrap();
    until("the send ran", || tally.passed.lock().unwrap().len() == 1).await;
    assert_eq!(engine.metrics().started.get(), 2, "the relay and its send");
    engine.shutdown();
}

/// A placed send cancelled while it waits behind its key's holder is counted as started,
/// as every invocation that queued on its key is (it was counted only once it ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_send_cancelled_before_it_ran_is_counted_as_started() {
    let Pair {
        halves: [a_half, _],
        handles: [a, _],
        ..
    } = pair();
    let (tally, _open) = Tally::new(false);
    let engine = start(&a, &tally);
    let partition = a_half.iter().next().unwrap();
    let (key, relay_key) = (key_in("Tally", partition), key_in("Relay", partition));
    let holder = send(&engine, &key, None).await;
    until("the key's holder runs", || tally.runs(&holder) == 1).await;
    let (_, sent, _) = within(engine.call(relay("send", &relay_key, &key)))
        .await
        .unwrap();
    let sent: InvocationId = relayed(&sent.outcome).parse().unwrap();
    within(engine.cancel(sent)).await.unwrap();
    until("the send ended", || completed(&a, &sent)).await;
    assert_eq!(tally.runs(&sent), 0, "it never ran");
    assert_eq!(
        engine.metrics().started.get(),
        3,
        "the holder, the relay and the send"
    );
    engine.shutdown();
}

/// A cancel from outside that lands while a send is being placed (its commit not answered)
/// follows the send through the inbox and ends it wherever the commit puts it: queued behind
/// its key's holder, it ends cancelled and never runs. It was refused ("ask again") before.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_send_is_being_placed_reaches_it() {
    let (tally, _open) = Tally::new(false);
    let Some((storage, engine, _client)) = on_postgres(&tally).await else {
        return;
    };
    let key = key_in("Tally", 0);
    let scope = tally_scope(&key);
    let holder = send(&engine, &key, None).await;
    until("the key's holder runs", || tally.runs(&holder) == 1).await;
    let (watched, cancelled) = (engine.clone(), Arc::new(Mutex::new(None)));
    let answer = cancelled.clone();
    storage.before_next_placing(Box::pin(async move {
        let placing = || {
            let lanes = watched.lanes.lock().unwrap();
            let lane = lanes.get(&scope)?;
            lane.loaded().find(|f| f.placing()).map(|f| f.id)
        };
        until("the send waits on its key", || placing().is_some()).await;
        // Answered while the send's commit waits for this step: in the window.
        let cancel = watched.cancel(placing().unwrap()).await;
        *answer.lock().unwrap() = Some(cancel);
    }));
    let relay_key = key_in("Relay", 1);
    let (_, sent, _) = within(engine.call(relay("send", &relay_key, &key)))
        .await
        .unwrap();
    let sent: InvocationId = relayed(&sent.outcome).parse().unwrap();
    let cancel = cancelled.lock().unwrap().take();
    cancel
        .expect("the cancel was sent")
        .expect("the cancel is taken, not refused");
    within(engine.kill(holder)).await.unwrap();
    until("the send ended", || {
        let record = storage.invocation(&sent).unwrap();
        record.is_some_and(|r| matches!(r.status, Status::Completed { .. }))
    })
    .await;
    let record = storage.invocation(&sent).unwrap().unwrap();
    assert!(
        matches!(
            &record.status,
            Status::Completed {
                outcome: Outcome::Failure { code: 409, .. },
                ..
            }
        ),
        "{:?}",
        record.status
    );
    assert_eq!(tally.runs(&sent), 0, "the cancelled send ran");
    engine.shutdown();
}

/// What an inbox page's invocations read as stored before the in-flight lock is read again
/// under it only where it may have changed since: for one in memory when the read began
/// (stored and gone from memory since), one created since, and every one after a partition
/// left or joined (another process may have stored it meanwhile). The others' early reads
/// stand (here, on purpose, a stale one: the record was written behind the engine's back).
#[tokio::test]
async fn an_early_read_of_what_is_stored_is_read_again_only_where_it_may_have_changed() {
    use super::super::forward::EarlyStored;
    use crate::storage::records::InvocationRecord;
    let pair = pair();
    let (tally, _open) = Tally::new(true);
    let engine = start(&pair.handles[0], &tally);
    let key = key_in("Tally", 0);
    let record = InvocationRecord::for_test("Tally", Some(&key), Status::Runnable);
    let ids: Vec<InvocationId> = (0..4)
        .map(|_| InvocationId::random(partition_key_of("Tally", &key)))
        .collect();
    let puts = ids
        .iter()
        .map(|id| WriteOp::put_new_invocation(*id, &record))
        .collect();
    pair.handles[0].submit(puts).await.unwrap();
    // As read before: not stored; `since` says what changed after.
    let early =
        |id: InvocationId, in_memory: bool, created_since: bool, moved_since: bool| EarlyStored {
            id,
            stored: false,
            creations: (engine.claims.creations(&id)).wrapping_sub(u64::from(created_since)),
            in_memory,
            partition_changes: engine
                .partition_changes()
                .wrapping_sub(u64::from(moved_since)),
        };
    let stored = {
        let map = engine.inflight.lock().unwrap();
        let page = vec![
            early(ids[0], true, false, false),
            early(ids[1], false, true, false),
            early(ids[2], false, false, true),
            early(ids[3], false, false, false),
        ];
        engine.stored_now(&map, page).unwrap()
    };
    let read: Vec<bool> = ids.iter().map(|id| stored[id]).collect();
    assert_eq!(read, [true, true, true, false]);
}

/// An inbox message whose invocation is stored in a form this binary cannot read (a newer
/// binary's, during a rolling deploy) is taken for applied: it leaves the inbox, the record
/// stays as it was, and the inbox goes on (an error there stopped every page).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_an_invocation_stored_unreadably_leaves_the_inbox() {
    let (tally, _open) = Tally::new(true);
    let Some((_storage, _engine, client)) = on_postgres(&tally).await else {
        return;
    };
    let key = key_in("Tally", 0);
    let id = InvocationId::random(partition_key_of("Tally", &key));
    client
        .execute(
            "INSERT INTO restate_invocations (id, partition_key, record) VALUES ($1, $2, $3)",
            &[
                &id.storage_key().to_vec(),
                &(id.partition_key() as i64),
                &vec![0xffu8, 0],
            ],
        )
        .await
        .unwrap();
    accept_elsewhere(&client, id, &key).await;
    client
        .execute("SELECT pg_notify('restate_inbox', '')", &[])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = (client.query_one("SELECT count(*) FROM restate_inbox", &[]))
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the message stays in the inbox");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record: Vec<u8> = (client.query_one(
        "SELECT record FROM restate_invocations WHERE id = $1",
        &[&id.storage_key().to_vec()],
    ))
    .await
    .unwrap()
    .get(0);
    assert_eq!(record, [0xff, 0], "the record is left as it was");
}

/// A timer that fires for an invocation of a partition this engine is still joining (its
/// recovery has not run yet) leaves it on disk: a delayed exclusive invocation loaded then
/// would start on its key ahead of the invocation recovery gives the key to (one that had
/// started on it before the partition moved), and both would run. Once the join ends, the
/// due index is read again and the timer fires then.
#[tokio::test]
async fn a_timer_loads_nothing_of_a_partition_still_joining() {
    use crate::storage::records::InvocationRecord;
    let pair = pair();
    let (tally, _open) = Tally::new(true);
    let engine = start(&pair.handles[0], &tally);
    let key = key_in("Tally", 0);
    let partition = Partitions::of(PARTITIONS, [0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.held.read().unwrap().running.contains(0) {
        assert!(Instant::now() < deadline, "partition 0 never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let move_join = |joining: bool| {
        let mut held = engine.held.write().unwrap();
        if joining {
            held.running = held.running.without(&partition);
            held.joining = held.joining.with(&partition);
        } else {
            held.joining = held.joining.without(&partition);
            held.running = held.running.with(&partition);
        }
    };
    move_join(true);
    let mut record =
        InvocationRecord::for_test("Tally", Some(&key), Status::Scheduled { at_ms: 1 });
    record.target.handler = "note".into();
    let id = InvocationId::random(partition_key_of("Tally", &key));
    let put = WriteOp::put_new_invocation(id, &record);
    pair.handles[0].submit(vec![put]).await.unwrap();
    // Fired, as a timer of its start time would (the engine's own may fire it as well).
    engine.resume_at(id, Some(1), None);
    assert!(
        !engine.inflight.lock().unwrap().contains_key(&id),
        "a timer loaded an invocation of a partition still joining"
    );
    move_join(false);
    engine.timers.reload();
    while tally.runs(&id) == 0 {
        assert!(
            Instant::now() < deadline,
            "the timer did not fire once the join ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.shutdown();
}

/// A relayed call and its retry through the inbox (the relay not answered) carry one id:
/// whichever reaches the owner first creates the invocation and the other finds it, in
/// either order, and neither answer says it replayed another request. With a retention of
/// zero, an invocation the relay made still keeps its result for the relay's window, so the
/// retry finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_and_its_retry_through_the_inbox_make_one_invocation_in_either_order() {
    for relay_first in [true, false] {
        let Pair { handles, .. } = pair();
        let (tally, _open) = Tally::new(true);
        let mut config = test_config();
        config.default_retention = Duration::ZERO;
        let start = |storage: &Arc<MemoryStorage>| {
            let storage = storage.clone() as Arc<dyn Storage>;
            Engine::start(storage, tally.registry(), config.clone()).unwrap()
        };
        let (owner, other) = (start(&handles[0]), start(&handles[1]));
        let key = key_in("Tally", 0);
        let id = InvocationId::fresh(partition_key_of("Tally", &key), crate::clock::now_ms());
        let mut req = note(&key, None);
        req.relayed = Some(id);
        // The relay runs at the owner; the retry goes through the owner's inbox.
        let (first, second) = match relay_first {
            true => (&owner, &other),
            false => (&other, &owner),
        };
        let (first_id, first_done, first_replayed) = within(first.call(req.clone())).await.unwrap();
        let (second_id, second_done, second_replayed) = within(second.call(req)).await.unwrap();
        assert_eq!((first_id, second_id), (id, id));
        assert_eq!(first_done.outcome, second_done.outcome);
        assert_eq!(
            first_done.outcome,
            Outcome::Success(format!("\"{id}\"").into_bytes())
        );
        assert!(
            !first_replayed && !second_replayed,
            "relay first: {relay_first}"
        );
        assert_eq!(tally.runs(&id), 1, "relay first: {relay_first}");
        let Some(Status::Completed {
            completed_at_ms,
            expires_at_ms,
            ..
        }) = handles[0].invocation(&id).unwrap().map(|r| r.status)
        else {
            panic!("stored as completed");
        };
        // Made through the inbox, it has its handler's retention (see `RELAYED_RETENTION`).
        let window = crate::clock::millis(crate::engine::RELAYED_RETENTION);
        let kept = expires_at_ms - completed_at_ms;
        assert_eq!(kept >= window, relay_first, "kept {kept} ms");
        owner.shutdown();
        other.shutdown();
    }
}

/// A kill of an invocation no task runs (queued behind its key's holder) gives back the claim
/// it took to end it. Among the invocations that leave with a partition, one still marked
/// running is waited for as a task that never stops, and the store never hears that this
/// process let any partition go (found from outside: a process on PostgreSQL never took a
/// partition again after it lost some while a kill committed). The claim is what is checked
/// (the leave during the kill's commit is not forced here); a partition leaving after the
/// kill is let go once its holder's task stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_of_an_invocation_no_task_runs_gives_its_claim_back() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = MemoryStore::default();
    let storage = Arc::new(store.open(PARTITIONS));
    let (tally, _open) = Tally::new(false);
    let engine = start(&storage, &tally);
    let key = key_in("Tally", 1);
    let holder = send(&engine, &key, None).await;
    until("the holder started", || tally.runs(&holder) == 1).await;
    let queued = send(&engine, &key, None).await;
    let copy = engine.inflight(&queued).expect("queued in memory");
    engine.kill(queued).await.unwrap();
    assert!(completed(&storage, &queued));
    assert!(!copy.running.load(SeqCst), "the kill's claim was kept");
    let rest = Partitions::all(PARTITIONS).without(&Partitions::of(PARTITIONS, [1]));
    let (before, _) = storage.left_on(&rest, 0);
    storage.set_owned(rest.clone());
    until("the store heard the partition was let go", || {
        storage.left_on(&rest, before).1
    })
    .await;
    engine.shutdown();
}

/// A call's result waiter whose callee still waits in its partition's inbox when the
/// partitions are taken over is not failed with a 404 by recovery: the callee runs once its
/// message is applied, and its result completes the caller's entry (found from outside: a
/// reminder's rate-limit call ended with "not found" right after another process took its
/// partitions over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_waiter_whose_source_waits_in_the_inbox_is_not_failed_at_recovery() {
    use crate::storage::JournalEntry;
    use crate::storage::records::InvocationRecord;
    let store = MemoryStore::default();
    let storage = Arc::new(store.open_shared(PARTITIONS));
    hand(&storage, &Partitions::all(PARTITIONS));
    let key = "k";
    let callee = InvocationId::random(partition_key_of("Tally", key));
    let caller = InvocationId::random(partition_key_of("Relay", "r"));
    let suspended = Status::Suspended { wake_at_ms: None };
    let mut record = InvocationRecord::for_test("Relay", Some("r"), suspended);
    record.target.handler = "call".into();
    record.input = serde_json::to_vec(key).unwrap();
    let entry = JournalEntry::Call {
        target: Target {
            service: "Tally".into(),
            handler: "note".into(),
            key: Some(key.into()),
        },
        invocation_id: callee,
        outcome: None,
    };
    let crate::storage::InboxMessage::Invoke(mut message) = note_message(key) else {
        unreachable!()
    };
    message.caller = Some((caller, 0));
    storage
        .submit(vec![
            WriteOp::put_invocation(caller, &record),
            WriteOp::put_journal(caller, 0, &entry),
            WriteOp::AddResultWaiter {
                source: callee,
                waiter: caller,
                index: 0,
                call: true,
            },
            WriteOp::forward(callee, &crate::storage::InboxMessage::Invoke(message)),
        ])
        .await
        .unwrap();
    let (tally, _open) = Tally::new(true);
    let engine = start(&storage, &tally);
    until("the caller completed", || completed(&storage, &caller)).await;
    let ended = storage.invocation(&caller).unwrap().unwrap();
    let Status::Completed {
        outcome: Outcome::Success(bytes),
        ..
    } = ended.status
    else {
        panic!("the call failed: {:?}", ended.status);
    };
    // `Relay/call` returns what `note` returned: the callee's id.
    let returned: String = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(returned, callee.to_string());
    assert_eq!(tally.runs(&callee), 1);
    engine.shutdown();
}

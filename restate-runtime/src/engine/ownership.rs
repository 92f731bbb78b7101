//! Which partitions this engine runs, and how that set grows. A partition joins once what the
//! store holds of it is recovered: at start, when a standby takes a shared database over, or
//! when the store hands this process more partitions (a stopped process's, taken over). Until
//! then work for it is forwarded to its owner's inbox, and its timers and inbox messages are
//! left to that owner.
//!
//! A partition leaves the set only with all the others, when a drained process hands its lease
//! over (`handover.rs`). Losing some while keeping others is not one of this engine's states:
//! the invocations of those in memory could not be stopped before they wrote again, so the
//! process stops (as after a failed commit, law 10) and its restart recovers what it still owns.

use tokio::sync::watch;

use super::{Engine, EngineError, forward, purge_loop, timers};
use crate::ids::InvocationId;
use crate::storage::Partitions;

impl Engine {
    /// The partitions it runs now.
    pub(crate) fn owned(&self) -> Partitions {
        self.owned.read().expect("owned lock").clone()
    }

    /// Whether it runs any partition; `false` while other processes run them all.
    pub(crate) fn runs_invocations(&self) -> bool {
        !self.owned.read().expect("owned lock").is_empty()
    }

    /// Whether it runs `id`'s partition.
    pub(crate) fn runs(&self, id: &InvocationId) -> bool {
        self.owned.read().expect("owned lock").holds(id)
    }

    /// Runs the invocations of `gained` from now on: what the store holds of them is
    /// recovered first. The first partitions also start the timers, the purger and the inbox;
    /// later ones have the timers read the store's due times again, theirs among them.
    pub(super) fn run_partitions(&self, gained: &Partitions) -> Result<(), EngineError> {
        self.recover(gained)?;
        let first = {
            let mut owned = self.owned.write().expect("owned lock");
            let first = owned.is_empty();
            *owned = owned.with(gained);
            first
        };
        tracing::info!(
            partitions = gained.len(),
            "this process runs more partitions"
        );
        if first {
            self.tasks.spawn(timers::run(self.clone()));
            self.tasks.spawn(purge_loop(self.clone()));
            self.tasks.spawn(forward::apply_inbox(self.clone()));
            if self.shared_store {
                self.tasks.spawn(self.clone().watch_handover());
            }
        } else {
            self.timers.reload();
        }
        Ok(())
    }
}

/// Follows the store's set of partitions for this process: takes in those it gains.
pub(super) async fn follow(engine: Engine, mut offered: watch::Receiver<Partitions>) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        tokio::select! {
            changed = offered.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = offered.borrow_and_update().clone();
        let held = engine.owned();
        let gained = now.without(&held);
        if !gained.is_empty()
            && let Err(e) = engine.run_partitions(&gained)
        {
            return (engine.config.on_storage_failure)(&format!(
                "recovering {gained:?} this process took over failed: {e}"
            ));
        }
        let lost = held.without(&now);
        // All of them go with a hand-over, which `watch_handover` carries out.
        if !lost.is_empty() && !now.is_empty() {
            return (engine.config.on_storage_failure)(&format!(
                "another process took {lost:?} over; this one stops, and its restart recovers \
                 the partitions it still holds"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use futures::future::BoxFuture;
    use tokio::sync::watch;

    use super::super::tests::test_config;
    use super::super::{Engine, InvokeRequest};
    use crate::context::InvocationContext;
    use crate::error::HandlerError;
    use crate::ids::{InvocationId, partition_key_of};
    use crate::registry::{
        HandlerKind, Registry, Service, ServiceDefinition, ServiceKind, internal_handler,
    };
    use crate::storage::{MemoryStorage, MemoryStore, Partitions, Status, Storage, Target};

    const PARTITIONS: u32 = 4;

    /// An object whose one handler notes which invocation ran it, then waits until `open`.
    #[derive(Clone)]
    struct Tally {
        runs: Arc<Mutex<HashMap<InvocationId, u32>>>,
        open: watch::Receiver<bool>,
    }

    impl Tally {
        fn new(open: bool) -> (Self, watch::Sender<bool>) {
            let (gate, open) = watch::channel(open);
            let runs = Arc::default();
            (Self { runs, open }, gate)
        }

        fn runs(&self, id: &InvocationId) -> u32 {
            self.runs.lock().unwrap().get(id).copied().unwrap_or(0)
        }

        fn registry(&self) -> Registry {
            Registry::assemble(vec![(Tally::definition(), Arc::new(self.clone()) as _)]).unwrap()
        }
    }

    impl Service for Tally {
        fn definition() -> ServiceDefinition {
            ServiceDefinition {
                name: "Tally",
                kind: ServiceKind::VirtualObject,
                handlers: vec![internal_handler("note", HandlerKind::Exclusive, None, "()")],
            }
        }

        fn invoke<'a>(
            &'a self,
            _handler: &'a str,
            ctx: &'a InvocationContext,
            _input: Bytes,
        ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
            *self.runs.lock().unwrap().entry(ctx.id()).or_default() += 1;
            let mut open = self.open.clone();
            Box::pin(async move {
                let _ = open.wait_for(|open| *open).await;
                Ok(Bytes::new())
            })
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

    fn partition_of(key: &str) -> u32 {
        (partition_key_of("Tally", key) % u64::from(PARTITIONS)) as u32
    }

    /// Sends `Tally/{key}/note` to run after `delay`, if any.
    async fn send(engine: &Engine, key: &str, delay: Option<Duration>) -> InvocationId {
        let req = InvokeRequest {
            target: Target {
                service: "Tally".into(),
                handler: "note".into(),
                key: Some(key.into()),
            },
            input: Bytes::new(),
            headers: Vec::new(),
            idempotency_key: None,
            delay,
        };
        engine.send(req).await.unwrap().0
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An engine holding no partition accepts delayed invocations; handed half of them, it
    /// runs those of that half only (those of the other half fell due long before, while it
    /// held none); handed the rest, it runs those too, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_engine_runs_the_partitions_it_is_handed_and_no_other() {
        let store = MemoryStore::default();
        let storage = Arc::new(store.open(PARTITIONS));
        storage.set_owned(Partitions::none(PARTITIONS));
        let (tally, _open) = Tally::new(true);
        let engine = start(&storage, &tally);
        let half = Partitions::of(PARTITIONS, [0, 1]);
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let (mut held, mut other) = (Vec::new(), Vec::new());
        for key in &keys {
            // The other half falls due first: had its timers been loaded, they would fire
            // before the held half's.
            match half.contains(partition_of(key)) {
                true => held.push(send(&engine, key, Some(Duration::from_millis(300))).await),
                false => other.push(send(&engine, key, Some(Duration::from_millis(1))).await),
            }
        }
        assert!(!held.is_empty() && !other.is_empty(), "keys in both halves");

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
        let mut ids = Vec::new();
        for i in 0..40 {
            let key = format!("k{i}");
            ids.push((
                half.contains(partition_of(&key)),
                send(&before, &key, None).await,
            ));
        }
        until("every invocation started", || {
            ids.iter().all(|(_, id)| tally.runs(id) == 1)
        })
        .await;
        before.shutdown();
        store.kill();

        let second = Arc::new(store.open(PARTITIONS));
        second.set_owned(half.clone());
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
}

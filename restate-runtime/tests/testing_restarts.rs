//! A test runtime's restart in the middle of each primitive (call, send, sleep, promise,
//! awakeable, state, select) leads to the outcome the process-level SIGKILL tests check: the
//! invocation finishes with the right result, and every journaled step ran exactly once. Each
//! test runs on the in-memory store and on a redb data folder, where a crash stops the
//! engine's writes at once and the next engine recovers from the folder's log, and with the
//! `postgres` feature on a PostgreSQL database too (where PostgreSQL is installed), where a
//! crash cuts the engine's sessions off and the next engine takes the database over.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait_until;
use futures::future::Either;
use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// Effects done inside `ctx.run`, by label: each must appear once, whatever restarts.
type Effects = Arc<Mutex<Vec<String>>>;

/// Notes `label` in `effects` inside a `ctx.run`, so a replay does not note it again.
macro_rules! effect {
    ($ctx:expr, $effects:expr, $label:expr) => {{
        let (effects, label) = ($effects.clone(), $label);
        $ctx.run(|| {
            effects.lock().unwrap().push(label.clone());
            std::future::ready(Ok(()))
        })
        .name("effect")
        .await?;
    }};
}

/// Awakeable ids published by handlers, by tag.
static AWAKEABLES: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn awakeable_of(tag: &str) -> Option<String> {
    AWAKEABLES.lock().unwrap().as_ref()?.get(tag).cloned()
}

#[derive(Default)]
pub struct Prims {
    effects: Effects,
}

#[service]
impl Prims {
    /// Calls `Slow::nap` (an hour), then notes the result.
    #[handler]
    async fn call_slow(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let got = ctx.client::<Slow>().nap(tag.clone()).call().await?;
        effect!(ctx, self.effects, format!("{tag}:after call"));
        Ok(got)
    }

    /// Sends `Slow::nap`, notes it, then sleeps an hour.
    #[handler]
    async fn send_then_sleep(&self, ctx: Context<'_>, tag: String) -> HandlerResult<()> {
        ctx.client::<Slow>().nap(format!("{tag}:sent")).send();
        effect!(ctx, self.effects, format!("{tag}:after send"));
        ctx.sleep(HOUR).await?;
        Ok(())
    }

    /// Waits on an awakeable whose id it publishes.
    #[handler]
    async fn await_awakeable(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (id, value) = ctx.awakeable::<String>();
        let publish = (tag.clone(), id);
        ctx.run(|| {
            AWAKEABLES
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(publish.0.clone(), publish.1.clone());
            std::future::ready(Ok(()))
        })
        .name("publish")
        .await?;
        let got = value.await?;
        effect!(ctx, self.effects, format!("{tag}:got {got}"));
        Ok(got)
    }

    /// Cancels another invocation (`ctx.cancel`) a second after it starts (its own send is
    /// answered first, whatever the crash does after).
    #[handler]
    async fn cancel_it(&self, ctx: Context<'_>, id: String) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(1)).await?;
        let id: restate_runtime::InvocationId =
            id.parse().map_err(|e| TerminalError::new(format!("{e}")))?;
        ctx.cancel(id);
        Ok(())
    }

    /// Races a call of an hour-and-a-half nap against an hour's sleep.
    #[handler]
    async fn select_sleep(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let call = ctx.client::<Slow>().nap_long(tag.clone()).call();
        let winner = match ctx.select(call, ctx.sleep(HOUR)).await {
            Either::Left(_) => "call",
            Either::Right(_) => "sleep",
        };
        effect!(ctx, self.effects, format!("{tag}:{winner}"));
        Ok(winner.into())
    }
}

#[derive(Default)]
pub struct Slow {
    effects: Effects,
}

#[service]
impl Slow {
    /// Sleeps an hour, notes it, returns the tag.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        ctx.sleep(HOUR).await?;
        effect!(ctx, self.effects, format!("{tag}:napped"));
        Ok(tag)
    }

    /// Sleeps an hour and a half.
    #[handler]
    async fn nap_long(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        ctx.sleep(HOUR + HOUR / 2).await?;
        Ok(tag)
    }
}

#[derive(Default)]
pub struct Tally {
    effects: Effects,
}

#[object]
impl Tally {
    /// Adds `n` to the state, sleeps an hour, adds again.
    #[handler]
    async fn add_twice(&self, ctx: ObjectContext<'_>, n: i64) -> HandlerResult<i64> {
        let first = ctx.get::<i64>("total").await?.unwrap_or(0) + n;
        ctx.set("total", first);
        ctx.sleep(HOUR).await?;
        let second = ctx.get::<i64>("total").await?.unwrap_or(0) + n;
        ctx.set("total", second);
        effect!(ctx, self.effects, format!("{}:{second}", ctx.key()));
        Ok(second)
    }
}

#[derive(Default)]
pub struct Verify {
    effects: Effects,
}

#[workflow]
impl Verify {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
        let code = ctx.promise::<String>("clicked").await?;
        effect!(ctx, self.effects, format!("{email}:{code}"));
        Ok(format!("{email} verified with {code}"))
    }

    #[handler]
    async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
        ctx.resolve_promise("clicked", code).await?;
        Ok(())
    }
}

/// Where a test's runtimes keep their store.
enum Store {
    Memory,
    /// A new folder in here for each runtime.
    Folders(tempfile::TempDir),
    /// A new database of this cluster for each runtime.
    #[cfg(feature = "postgres")]
    Databases(&'static restate_runtime::testing::PostgresCluster),
}

impl Store {
    fn folders() -> Self {
        Self::Folders(tempfile::tempdir().unwrap())
    }

    /// Tells apart what the two runs of a test publish in this process's statics (they run
    /// at the same time).
    fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Folders(_) => "folder",
            #[cfg(feature = "postgres")]
            Self::Databases(_) => "database",
        }
    }
}

/// Runs each test on either store.
macro_rules! on_each_store {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Store::Memory).await;
                }
            )*
        }
        mod in_a_data_folder {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Store::folders()).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod in_a_database {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    // Skipped where PostgreSQL is not installed.
                    if let Some(cluster) = restate_runtime::testing::PostgresCluster::for_tests() {
                        super::$test(super::Store::Databases(cluster)).await;
                    }
                }
            )*
        }
    };
}

on_each_store!(
    a_restart_while_a_call_waits_gives_the_callee_result_once,
    a_restart_after_a_send_runs_the_message_once,
    a_restart_between_state_writes_keeps_the_first,
    a_promise_resolved_after_a_restart_wakes_its_workflow,
    an_awakeable_resolved_after_a_restart_wakes_its_handler,
    a_restart_during_a_select_lets_the_earlier_branch_win,
    a_crash_at_each_crash_point_loses_nothing,
);

/// A runtime with every service above sharing one effects log, suspending after a second.
async fn runtime(store: &Store) -> (TestRuntime, Effects) {
    static FOLDERS: AtomicU64 = AtomicU64::new(0);
    let effects = Effects::default();
    let mut builder = TestRuntime::builder();
    if let Store::Folders(dir) = store {
        let n = FOLDERS.fetch_add(1, Ordering::Relaxed);
        builder = builder.data_dir(dir.path().join(n.to_string()));
    }
    #[cfg(feature = "postgres")]
    if let Store::Databases(cluster) = store {
        builder = builder.database_url(cluster.fresh_database().unwrap());
    }
    let t = builder
        .bind(Prims {
            effects: effects.clone(),
        })
        .bind(Slow {
            effects: effects.clone(),
        })
        .bind(Tally {
            effects: effects.clone(),
        })
        .bind(Verify {
            effects: effects.clone(),
        })
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    (t, effects)
}

fn sorted(effects: &Effects) -> Vec<String> {
    let mut all = effects.lock().unwrap().clone();
    all.sort();
    all
}

/// Both before and after the waiter suspended: a restart 0.5 s in (in memory) and 30 s in.
const RESTART_AFTER: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(30)];

async fn a_restart_while_a_call_waits_gives_the_callee_result_once(store: Store) {
    for wait in RESTART_AFTER {
        let (t, effects) = runtime(&store).await;
        let id = t
            .handle()
            .client::<Prims>()
            .call_slow("c".into())
            .send()
            .await
            .unwrap();
        t.advance(wait).await;
        t.restart().await;
        t.advance(HOUR).await;
        assert_eq!(id.output().await.unwrap(), Some("c".to_owned()), "{wait:?}");
        assert_eq!(sorted(&effects), ["c:after call", "c:napped"], "{wait:?}");
    }
}

async fn a_restart_after_a_send_runs_the_message_once(store: Store) {
    for wait in RESTART_AFTER {
        let (t, effects) = runtime(&store).await;
        let id = t
            .handle()
            .client::<Prims>()
            .send_then_sleep("s".into())
            .send()
            .await
            .unwrap();
        t.advance(wait).await;
        t.restart().await;
        t.advance(HOUR).await;
        assert_eq!(id.output().await.unwrap(), Some(()), "{wait:?}");
        assert_eq!(
            sorted(&effects),
            ["s:after send", "s:sent:napped"],
            "{wait:?}"
        );
    }
}

async fn a_restart_between_state_writes_keeps_the_first(store: Store) {
    for wait in RESTART_AFTER {
        let (t, effects) = runtime(&store).await;
        let id = t
            .handle()
            .object::<Tally>("k")
            .add_twice(5)
            .send()
            .await
            .unwrap();
        t.advance(wait).await;
        assert_eq!(t.state::<i64>("Tally", "k", "total"), Some(5), "{wait:?}");
        t.restart().await;
        t.advance(HOUR).await;
        assert_eq!(id.output().await.unwrap(), Some(10), "{wait:?}");
        assert_eq!(t.state::<i64>("Tally", "k", "total"), Some(10));
        assert_eq!(sorted(&effects), ["k:10"]);
    }
}

async fn a_promise_resolved_after_a_restart_wakes_its_workflow(store: Store) {
    for wait in RESTART_AFTER {
        let (t, effects) = runtime(&store).await;
        let flow = t.handle().workflow::<Verify>("ada");
        let id = flow.run("ada@example.com".into()).send().await.unwrap();
        t.advance(wait).await;
        t.restart().await;
        t.handle()
            .workflow::<Verify>("ada")
            .click("1234".into())
            .call()
            .await
            .unwrap();
        t.run_until_idle().await;
        assert_eq!(
            id.output().await.unwrap(),
            Some("ada@example.com verified with 1234".to_owned()),
            "{wait:?}"
        );
        assert_eq!(sorted(&effects), ["ada@example.com:1234"]);
    }
}

async fn an_awakeable_resolved_after_a_restart_wakes_its_handler(store: Store) {
    for (n, wait) in RESTART_AFTER.into_iter().enumerate() {
        let tag = format!("{}-a{n}", store.name());
        let (t, effects) = runtime(&store).await;
        let id = t
            .handle()
            .client::<Prims>()
            .await_awakeable(tag.clone())
            .send()
            .await
            .unwrap();
        t.advance(wait).await;
        let awakeable = awakeable_of(&tag).expect("published");
        t.restart().await;
        t.handle()
            .resolve_awakeable(&awakeable, "yes")
            .await
            .unwrap();
        t.run_until_idle().await;
        assert_eq!(
            id.output().await.unwrap(),
            Some("yes".to_owned()),
            "{wait:?}"
        );
        assert_eq!(sorted(&effects), [format!("{tag}:got yes")]);
    }
}

async fn a_restart_during_a_select_lets_the_earlier_branch_win(store: Store) {
    for wait in RESTART_AFTER {
        let (t, effects) = runtime(&store).await;
        let id = t
            .handle()
            .client::<Prims>()
            .select_sleep("x".into())
            .send()
            .await
            .unwrap();
        t.advance(wait).await;
        t.restart().await;
        t.advance(HOUR).await;
        assert_eq!(
            id.output().await.unwrap(),
            Some("sleep".to_owned()),
            "{wait:?}"
        );
        assert_eq!(sorted(&effects), ["x:sleep"]);
        // The losing call still finishes, once, in its own time.
        t.advance(HOUR).await;
        let calls = t.invocations(
            restate_runtime::testing::InvocationFilter::default()
                .handler("nap_long")
                .status("completed"),
        );
        assert_eq!(calls.len(), 1);
    }
}

/// Crashes at each of the engine's crash points (the ones the process-level tests kill a
/// process at), then a restart: the invocation ends as it would have without the crash.
async fn a_crash_at_each_crash_point_loses_nothing(store: Store) {
    // A suspension is durable, the invocation still in memory.
    let (t, effects) = runtime(&store).await;
    t.crash_at("suspend.committed", 1);
    let nap = t
        .handle()
        .client::<Slow>()
        .nap("s".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    assert!(t.crashed(), "suspend.committed");
    t.restart().await;
    t.advance(HOUR).await;
    assert_eq!(nap.output().await.unwrap(), Some("s".to_owned()));
    assert_eq!(sorted(&effects), ["s:napped"]);

    // A suspended invocation is back in memory, not run yet.
    let (t, effects) = runtime(&store).await;
    let nap = t
        .handle()
        .client::<Slow>()
        .nap("r".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    t.crash_at("resume.loaded", 1);
    t.advance(HOUR).await;
    assert!(t.crashed(), "resume.loaded");
    assert!(
        effects.lock().unwrap().is_empty(),
        "nothing ran after the crash"
    );
    t.restart().await;
    t.run_until_idle().await;
    assert_eq!(nap.output().await.unwrap(), Some("r".to_owned()));
    assert_eq!(sorted(&effects), ["r:napped"]);

    // A callee's result and the suspended caller's wake-up are durable; the caller is not
    // back yet.
    let (t, effects) = runtime(&store).await;
    let caller = t
        .handle()
        .client::<Prims>()
        .call_slow("w".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    t.crash_at("wake.committed", 1);
    t.advance(HOUR).await;
    assert!(t.crashed(), "wake.committed");
    t.restart().await;
    t.run_until_idle().await;
    assert_eq!(caller.output().await.unwrap(), Some("w".to_owned()));
    assert_eq!(sorted(&effects), ["w:after call", "w:napped"]);

    // A delayed send is durable and has left memory.
    let (t, effects) = runtime(&store).await;
    t.crash_at("delayed.parked", 1);
    let later = t
        .handle()
        .client::<Slow>()
        .nap("d".into())
        .send_after(HOUR)
        .await
        .unwrap();
    t.run_until_idle().await;
    assert!(t.crashed(), "delayed.parked");
    t.restart().await;
    t.advance(2 * HOUR).await;
    assert_eq!(later.output().await.unwrap(), Some("d".to_owned()));
    assert_eq!(sorted(&effects), ["d:napped"]);

    // A caller's cancellation is delivered at the call it waits on, with its callee's
    // cancellation request; the callee has not taken it yet.
    let (t, effects) = runtime(&store).await;
    let caller = t
        .handle()
        .client::<Prims>()
        .call_slow("k".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    t.crash_at("cancel.delivered", 1);
    caller.cancel().await.unwrap();
    t.advance(Duration::from_secs(2)).await;
    assert!(t.crashed(), "cancel.delivered");
    t.restart().await;
    t.advance(2 * HOUR).await;
    let cancelled = caller.output().await.unwrap_err();
    assert!(cancelled.to_string().contains("cancelled"), "{cancelled}");
    assert!(
        effects.lock().unwrap().is_empty(),
        "the callee was cancelled with its caller: {:?}",
        effects.lock().unwrap()
    );

    // A killed caller's end is durable, with its callee's cancellation request; the callee
    // is not killed yet: after the restart it is cancelled.
    let (t, effects) = runtime(&store).await;
    let caller = t
        .handle()
        .client::<Prims>()
        .call_slow("x".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    t.crash_at("kill.propagated", 1);
    t.handle().kill(caller.invocation_id()).await.unwrap();
    t.advance(Duration::from_secs(2)).await;
    assert!(t.crashed(), "kill.propagated");
    t.restart().await;
    t.advance(2 * HOUR).await;
    let killed = caller.output().await.unwrap_err();
    assert!(killed.to_string().contains("killed"), "{killed}");
    assert!(
        effects.lock().unwrap().is_empty(),
        "the callee ended with its caller: {:?}",
        effects.lock().unwrap()
    );

    // A handler's cancel is durable, not delivered yet.
    let (t, effects) = runtime(&store).await;
    let target = t
        .handle()
        .client::<Slow>()
        .nap("c".into())
        .send()
        .await
        .unwrap();
    t.run_until_idle().await;
    t.crash_at("cancel.recorded", 1);
    let id = target.invocation_id().to_string();
    t.handle()
        .client::<Prims>()
        .cancel_it(id)
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    assert!(t.crashed(), "cancel.recorded");
    t.restart().await;
    t.advance(HOUR).await;
    let cancelled = target.output().await.unwrap_err();
    assert!(cancelled.to_string().contains("cancelled"), "{cancelled}");
    assert!(
        effects.lock().unwrap().is_empty(),
        "a cancelled nap notes nothing"
    );
}

/// With one recovery slot and no suspension for two hours, a caller restored after a restart
/// holds the slot its callee, restored after it, needs to run. It gives the slot up by
/// suspending as soon as the callee waits for one, instead of after two hours: the callee's
/// hour-long nap ends, and the caller gets its result, within the hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_caller_gives_its_recovery_slot_to_the_callee_it_waits_for() {
    let effects = Effects::default();
    let t = TestRuntime::builder()
        .bind(Prims {
            effects: effects.clone(),
        })
        .bind(Slow {
            effects: effects.clone(),
        })
        .recovery_concurrency(1)
        .suspend_after(2 * HOUR)
        .build()
        .await;
    let id = t
        .handle()
        .client::<Prims>()
        .call_slow("c".into())
        .send()
        .await
        .unwrap();
    t.advance(Duration::from_secs(1)).await;
    t.restart().await;
    t.advance(HOUR).await;
    assert_eq!(id.output().await.unwrap(), Some("c".to_owned()));
    assert_eq!(sorted(&effects), ["c:after call", "c:napped"]);
}

/// Starts of the step of `Stepper::step_and_call`, and whether it may end.
static STEP_STARTS: AtomicU64 = AtomicU64::new(0);
static STEP_GATE: AtomicBool = AtomicBool::new(false);
/// Starts of `Stepper::doze`.
static DOZE_STARTS: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct Stepper;

#[service]
impl Stepper {
    /// A step that runs until the test opens its gate, joined with a call to `doze`.
    #[handler]
    async fn step_and_call(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        let step = ctx
            .run(|| async {
                STEP_STARTS.fetch_add(1, Ordering::SeqCst);
                while !STEP_GATE.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(())
            })
            .name("gated");
        let call = ctx.client::<Stepper>().doze().call();
        let ((), dozed) =
            futures::join!(async { step.await.unwrap() }, async { call.await.unwrap() });
        Ok(dozed)
    }

    /// Sleeps a second.
    #[handler]
    async fn doze(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        DOZE_STARTS.fetch_add(1, Ordering::SeqCst);
        ctx.sleep(Duration::from_secs(1)).await?;
        Ok(7)
    }
}

/// A restored invocation that gives its recovery slot up (another load waits for one) does
/// not suspend while one of its `ctx.run` closures executes: that would cut the closure off
/// and run it again on resume. It suspends once the step has ended (journaled), and the step
/// ran once before the restart and once after it, never a third time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_invocation_gives_its_slot_up_only_once_its_step_has_ended() {
    let t = TestRuntime::builder()
        .bind(Stepper)
        .recovery_concurrency(1)
        .suspend_after(2 * HOUR)
        .build()
        .await;
    let id = t
        .handle()
        .client::<Stepper>()
        .step_and_call()
        .send()
        .await
        .unwrap();
    // Polled: a `ctx.run` closure that waits keeps the test runtime from being idle, so
    // `run_until_idle` cannot be used meanwhile.
    wait_until(MINUTE, || async {
        STEP_STARTS.load(Ordering::SeqCst) == 1 && DOZE_STARTS.load(Ordering::SeqCst) == 1
    })
    .await;
    t.restart().await;
    // Restored first, the caller holds the one slot; its callee waits for it.
    wait_until(MINUTE, || async { STEP_STARTS.load(Ordering::SeqCst) == 2 }).await;
    STEP_GATE.store(true, Ordering::SeqCst);
    t.advance(Duration::from_secs(2)).await;
    assert_eq!(id.output().await.unwrap(), Some(7));
    assert_eq!(
        STEP_STARTS.load(Ordering::SeqCst),
        2,
        "the step ran once after the restart"
    );
    assert_eq!(DOZE_STARTS.load(Ordering::SeqCst), 2);
}

/// Whether `Changing::flow` takes its old path (a step, an hour's sleep, a step) or its new one
/// (the first step, then a return), and how often its second step ran.
static OLD_PATH: AtomicBool = AtomicBool::new(true);
static SECOND_STEPS: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct Changing;

#[service]
impl Changing {
    #[handler]
    async fn flow(&self, ctx: Context<'_>) -> HandlerResult<String> {
        ctx.run(|| async { Ok(()) }).name("first").await?;
        if !OLD_PATH.load(Ordering::SeqCst) {
            return Ok("new".into());
        }
        ctx.sleep(HOUR).await?;
        ctx.run(|| async {
            SECOND_STEPS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .name("second")
        .await?;
        Ok("old".into())
    }
}

/// New code that returns before reaching what an invocation's journal holds (here, the sleep
/// it was suspended in, replayed when its timer resumes it) took another path than the code that wrote it: the invocation is paused
/// with a non-determinism error naming the entry, as the replay check reports it, not
/// completed past its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_returns_before_the_journal_ends_pauses_the_invocation() {
    let t = TestRuntime::builder().bind(Changing).build().await;
    let id = t.handle().client::<Changing>().flow().send().await.unwrap();
    t.advance(Duration::from_secs(60)).await;
    OLD_PATH.store(false, Ordering::SeqCst);
    t.restart().await;
    // Its timer resumes it on the new code.
    t.advance(HOUR).await;
    let view = t.invocation(id.invocation_id()).unwrap();
    let reason = view.record.last_error.clone().unwrap_or_default();
    assert_eq!(view.status(), "paused", "{reason}");
    assert!(
        reason.contains("non-determinism") && reason.contains("journal entry 1 is `sleep`"),
        "{reason}"
    );
    assert_eq!(id.output().await.unwrap(), None);
    assert_eq!(SECOND_STEPS.load(Ordering::SeqCst), 0);
}

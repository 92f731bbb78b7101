//! Patch markers: a code change deployed while invocations are suspended. Invocations that
//! started on the old code replay it and finish on it; new ones run the new code, and keep it
//! across suspensions and crashes; a retired change still replays; without a marker the
//! change pauses old invocations for non-determinism.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use restate_runtime::InvocationId;
use restate_runtime::prelude::*;
use restate_runtime::storage::JournalEntry;
use restate_runtime::testing::{InvocationFilter, TestRuntime};

const HOUR: Duration = Duration::from_secs(3600);

/// Which code the handler runs, as if a new binary had been deployed: 1 before the change,
/// 2 with the change behind a patch marker, 3 with the marker retired, 4 with the change made
/// without a marker.
static CODE: AtomicU8 = AtomicU8::new(1);

/// The tests change [`CODE`], so they take turns.
static DEPLOYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
pub struct Orders;

#[object]
impl Orders {
    /// Charges, (from the change on) reserves stock, waits an hour, emails: the steps it took.
    #[handler]
    async fn complete(&self, ctx: ObjectContext<'_>) -> HandlerResult<Vec<String>> {
        let mut steps = vec![step(&ctx, "charge").await?];
        let reserve = match CODE.load(Ordering::SeqCst) {
            1 => false,
            2 => {
                let patched = ctx.patched("reserve-stock");
                // Decided once: asking again gives the same answer and journals nothing.
                assert_eq!(ctx.patched("reserve-stock"), patched);
                patched
            }
            3 => {
                ctx.deprecate_patch("reserve-stock");
                true
            }
            _ => true,
        };
        if reserve {
            steps.push(step(&ctx, "reserve").await?);
        }
        ctx.sleep(HOUR).await?;
        steps.push(step(&ctx, "email").await?);
        Ok(steps)
    }
}

async fn step(ctx: &ObjectContext<'_>, name: &str) -> HandlerResult<String> {
    let name = name.to_owned();
    ctx.run(|| std::future::ready(Ok(name.clone())))
        .name(name.clone())
        .await
        .map_err(Into::into)
}

async fn start(t: &TestRuntime, order: &str) -> InvocationId {
    t.handle()
        .object::<Orders>(order)
        .complete()
        .send()
        .await
        .unwrap()
        .invocation_id()
}

fn kinds(t: &TestRuntime, id: InvocationId) -> Vec<&'static str> {
    let view = t.invocation(id).unwrap();
    view.journal.iter().map(|(_, e)| e.kind()).collect()
}

async fn steps_of(t: &TestRuntime, id: InvocationId) -> Vec<String> {
    let output = t.handle().invocation(id).output().await.unwrap();
    serde_json::from_value(output.expect("finished")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_invocations_finish_on_old_code_and_new_ones_on_new_code_across_crashes() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, Ordering::SeqCst);
    let t = TestRuntime::builder()
        .bind(Orders)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let old = start(&t, "old").await;
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(t.invocation(old).unwrap().status(), "suspended");
    assert_eq!(kinds(&t, old), ["run", "sleep"]);

    // The deploy: version 2 reserves stock behind a patch marker.
    CODE.store(2, Ordering::SeqCst);
    t.restart().await;
    let new = start(&t, "new").await;
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(t.invocation(new).unwrap().status(), "suspended");
    assert_eq!(kinds(&t, new), ["run", "patch", "run", "sleep"]);
    let view = t.invocation(new).unwrap();
    assert!(matches!(
        &view.journal[1].1,
        JournalEntry::Patch { change } if change == "reserve-stock"
    ));
    // A crash while both are suspended: each replays its own journal on the new code.
    t.restart().await;
    t.advance(HOUR).await;
    assert_eq!(steps_of(&t, old).await, ["charge", "email"]);
    assert_eq!(steps_of(&t, new).await, ["charge", "reserve", "email"]);
    assert_eq!(kinds(&t, old), ["run", "sleep", "run"]);
    assert!(
        t.invocations(InvocationFilter::default().status("paused"))
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_patch_replays_marked_journals_and_a_change_without_one_pauses_old_ones() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, Ordering::SeqCst);
    let t = TestRuntime::builder()
        .bind(Orders)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let before = start(&t, "before").await;
    t.advance(Duration::from_secs(5)).await;
    CODE.store(2, Ordering::SeqCst);
    let marked = start(&t, "marked").await;
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(kinds(&t, marked), ["run", "patch", "run", "sleep"]);

    // Version 3 retires the marker: the marked journal replays past it.
    CODE.store(3, Ordering::SeqCst);
    t.restart().await;
    let after = start(&t, "after").await;
    t.advance(HOUR + Duration::from_secs(5)).await;
    assert_eq!(steps_of(&t, marked).await, ["charge", "reserve", "email"]);
    assert_eq!(steps_of(&t, after).await, ["charge", "reserve", "email"]);
    assert_eq!(kinds(&t, after), ["run", "run", "sleep", "run"]);
    // The invocation from before the change was still around: retiring the marker too early
    // breaks it, as the docs warn, and it is paused rather than run wrong.
    let paused = t.invocation(before).unwrap();
    assert_eq!(paused.status(), "paused");
    assert!(
        paused
            .record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("non-determinism")),
        "{:?}",
        paused.record.last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_a_marker_pauses_the_invocations_it_would_break() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, Ordering::SeqCst);
    let t = TestRuntime::builder()
        .bind(Orders)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let old = start(&t, "old").await;
    t.advance(Duration::from_secs(5)).await;
    CODE.store(4, Ordering::SeqCst);
    t.restart().await;
    let new = start(&t, "new").await;
    t.advance(HOUR + Duration::from_secs(5)).await;
    assert_eq!(steps_of(&t, new).await, ["charge", "reserve", "email"]);
    let view = t.invocation(old).unwrap();
    assert_eq!(view.status(), "paused");
    let error = view.record.last_error.unwrap();
    assert!(
        error.contains("journal entry 1 is `sleep`") && error.contains("`run"),
        "{error}"
    );
}

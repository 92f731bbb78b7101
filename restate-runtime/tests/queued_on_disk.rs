//! Delayed sends that fall due behind a busy object key wait for it on disk (the test
//! runtime's view): shown `pending` as in the admin API, and run once each, in the order they
//! arrived, through cancels and a restart.

use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::testing::{InvocationFilter, TestRuntime};

#[derive(Default)]
pub struct Probe;

#[object]
impl Probe {
    /// Holds the key through a sleep long enough to suspend.
    #[handler]
    async fn hold(&self, ctx: ObjectContext<'_>, secs: u64) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(secs)).await?;
        Ok(())
    }

    #[handler]
    async fn append(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<()> {
        let mut seen = ctx.get::<Vec<u32>>("seen").await?.unwrap_or_default();
        seen.push(n);
        ctx.set("seen", seen);
        Ok(())
    }
}

async fn runtime() -> TestRuntime {
    TestRuntime::builder()
        .bind(Probe)
        .suspend_after(Duration::from_millis(100))
        .build()
        .await
}

/// The test runtime's view of a delayed send due behind a busy key says what the admin API
/// says (and what it said when such a send was loaded in memory): pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_due_send_behind_a_busy_key_is_shown_pending() {
    let t = runtime().await;
    let p = t.handle().object::<Probe>("k");
    p.hold(10).send().await.unwrap();
    let id = p
        .append(1)
        .send_after(Duration::from_secs(1))
        .await
        .unwrap()
        .invocation_id();
    t.advance(Duration::from_secs(2)).await;
    let listed = t.invocations(InvocationFilter::default().status("pending"));
    let listed: Vec<_> = listed.iter().map(|v| (v.id, v.status())).collect();
    assert!(
        listed.contains(&(id, "pending")),
        "listed as pending: {listed:?}"
    );
    assert_eq!(
        t.invocation(id).unwrap().status(),
        "pending",
        "view agrees with the listing"
    );
}

/// Delayed, plain and delayed again behind a suspended holder, one cancelled while it waits
/// on disk, then a restart while more wait: each runs once, in arrival order.
#[tokio::test(flavor = "multi_thread")]
async fn sends_behind_a_suspended_holder_run_once_in_order_through_a_cancel_and_a_restart() {
    let t = runtime().await;
    let p = t.handle().object::<Probe>("k");
    p.hold(10).send().await.unwrap();
    p.append(1)
        .send_after(Duration::from_secs(1))
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    p.append(2).send().await.unwrap();
    let gone = p
        .append(99)
        .send_after(Duration::from_secs(1))
        .await
        .unwrap();
    p.append(3)
        .send_after(Duration::from_secs(1))
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    gone.cancel().await.unwrap();
    p.append(4).send().await.unwrap();
    p.append(5)
        .send_after(Duration::from_secs(1))
        .await
        .unwrap();
    t.advance(Duration::from_secs(2)).await;
    t.restart().await;
    p.append(6).send().await.unwrap();
    t.advance(Duration::from_secs(30)).await;
    t.run_until_idle().await;
    let seen: Vec<u32> = t.state("Probe", "k", "seen").unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
}

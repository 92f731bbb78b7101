//! The orders app in three releases, one source, one binary (`orders`) whose build's cargo
//! feature chooses the release: the deploy test and the README's "Deploying a new version"
//! recipe run them. Version 2 reserves stock before the wait for delivery, notifies a reviewer
//! before waiting for an approval, and quotes before booking a carrier; feature `orders-v2`
//! makes each change behind a patch marker, `orders-v2-unpatched` makes them without one (what
//! the replay check catches before a deploy).
//!
//! Environment: `ORDERS_WAIT` (default `1h`): how long an order waits before its email and a
//! carrier before its booking; and every `RESTATE_*` variable.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use restate_runtime::prelude::*;

/// Which code this binary runs (its build's features name one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Release {
    V1,
    V2,
    V2Unpatched,
}

static RELEASE: OnceLock<Release> = OnceLock::new();

/// Whether an invocation runs `change`: never in version 1; behind a patch marker in version
/// 2 (`patched` asks the invocation's context); always in the unpatched version 2.
fn changed(patched: impl FnOnce() -> bool) -> bool {
    match RELEASE.get().copied().unwrap_or(Release::V1) {
        Release::V1 => false,
        Release::V2 => patched(),
        Release::V2Unpatched => true,
    }
}

fn wait() -> Duration {
    std::env::var("ORDERS_WAIT")
        .ok()
        .and_then(|v| restate_runtime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(3600))
}

/// A step that returns its name, so a result lists the steps an invocation took.
macro_rules! step {
    ($ctx:expr, $name:expr) => {
        $ctx.run(|| async { Ok($name.to_owned()) }).name($name)
    };
}

/// One order: charge, (2) reserve stock, wait for delivery, email.
#[derive(Default)]
pub struct Orders;

#[object]
impl Orders {
    #[handler]
    async fn checkout(&self, ctx: ObjectContext<'_>) -> HandlerResult<Vec<String>> {
        let mut steps = vec![step!(ctx, "charge").await?];
        if changed(|| ctx.patched("reserve-stock")) {
            steps.push(step!(ctx, "reserve").await?);
        }
        ctx.sleep(wait()).await?;
        steps.push(step!(ctx, "email").await?);
        Ok(steps)
    }
}

/// A document's approval: request, (2) notify the reviewer, wait for the decision, archive.
#[derive(Default)]
pub struct Approval;

#[workflow]
impl Approval {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<Vec<String>> {
        let mut steps = vec![step!(ctx, "request").await?];
        if changed(|| ctx.patched("notify-reviewer")) {
            steps.push(step!(ctx, "notify").await?);
        }
        let decision: String = ctx.promise("decision").await?;
        steps.push(decision);
        steps.push(step!(ctx, "archive").await?);
        Ok(steps)
    }

    #[handler]
    async fn decide(&self, ctx: SharedWorkflowContext<'_>, decision: String) -> HandlerResult<()> {
        ctx.resolve_promise("decision", decision).await?;
        Ok(())
    }
}

/// A shipment: pack, (2) get a quote, book a carrier (a call that takes a while), label.
#[derive(Default)]
pub struct Shipping;

#[object]
impl Shipping {
    #[handler]
    async fn ship(&self, ctx: ObjectContext<'_>) -> HandlerResult<Vec<String>> {
        let mut steps = vec![step!(ctx, "pack").await?];
        if changed(|| ctx.patched("quote-first")) {
            steps.push(step!(ctx, "quote").await?);
        }
        let parcel = ctx.key().to_owned();
        steps.push(ctx.client::<Carrier>().book(parcel).call().await?);
        steps.push(step!(ctx, "label").await?);
        Ok(steps)
    }
}

/// The carrier, the same in both versions.
#[derive(Default)]
pub struct Carrier;

#[service]
impl Carrier {
    #[handler]
    async fn book(&self, ctx: Context<'_>, parcel: String) -> HandlerResult<String> {
        ctx.sleep(wait()).await?;
        Ok(format!("booked {parcel}"))
    }
}

/// Serves `release` (its application version `orders-1` or `orders-2`), or runs the command
/// its arguments name (`check-replay --data-dir <backup>`).
pub async fn main(release: Release) -> ExitCode {
    restate_runtime::init_tracing();
    RELEASE.set(release).expect("set once");
    let version = match release {
        Release::V1 => "orders-1",
        Release::V2 | Release::V2Unpatched => "orders-2",
    };
    Runtime::builder()
        .data_dir("./data")
        .app_version(version)
        .main()
        .await
}

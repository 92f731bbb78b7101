//! A small app for crash tests: `Steps/run` journals `n` slow steps, each appending a line to
//! the file named by `STEPS_FILE`, so a test can kill the process mid-invocation and count
//! what ran. `Waits` and `Approval` wait (a sleep, a call, a promise) so that tests can race
//! wake-ups against suspensions and kill the process after a resume.

use std::io::Write;
use std::time::Duration;

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Steps;

fn append(line: &str) -> std::io::Result<()> {
    let path = std::env::var("STEPS_FILE").map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")?;
    file.sync_all()
}

fn step_delay() -> Duration {
    let ms = std::env::var("STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    Duration::from_millis(ms)
}

#[service]
impl Steps {
    /// Runs `n` steps; returns how many ran.
    #[handler]
    async fn run(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        append(&format!("start {}", ctx.invocation_id()))?;
        for i in 0..n {
            ctx.run(|| async move {
                tokio::time::sleep(step_delay()).await;
                append(&format!("step-{i}"))?;
                Ok(())
            })
            .name(format!("step-{i}"))
            .await?;
        }
        Ok(n)
    }
}

#[derive(Default)]
pub struct Waits;

#[service]
impl Waits {
    /// Sleeps durably for `ms` milliseconds; returns `ms`.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }

    /// Calls `Waits/busy(ms)` and returns its answer plus one.
    #[handler]
    async fn call(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        let answer = ctx.service_client::<WaitsClient>().busy(ms).call().await?;
        Ok(answer + 1)
    }

    /// Works (not durably) for `ms` milliseconds; returns `ms`.
    #[handler]
    async fn busy(&self, _ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

/// `run` waits for the `go` promise, then runs one slow step (`STEP_MS`) that appends
/// `step <key>` to `STEPS_FILE` when it starts; `approve` resolves the promise.
#[derive(Default)]
pub struct Approval;

#[workflow]
impl Approval {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
        let note: String = ctx.promise("go").await?;
        let key = ctx.key().to_owned();
        let key = &key;
        ctx.run(|| async move {
            append(&format!("step {key}"))?;
            tokio::time::sleep(step_delay()).await;
            Ok(())
        })
        .name("slow step")
        .await?;
        Ok(format!("approved: {note}"))
    }

    #[handler]
    async fn approve(&self, ctx: SharedWorkflowContext<'_>, note: String) -> HandlerResult<()> {
        ctx.resolve_promise("go", note).await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder().build()?.serve().await?;
    Ok(())
}

//! A small app for crash tests: `Steps/run` journals `n` slow steps, each appending a line to
//! the file named by `STEPS_FILE`, so a test can kill the process mid-invocation and count
//! what ran.

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder().build()?.serve().await?;
    Ok(())
}

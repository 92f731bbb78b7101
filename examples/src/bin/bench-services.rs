//! The services every benchmark drives (the same contract as the Restate-side bench app):
//! `Noop/echo`, `Steps/three`, `Counter/{key}/add|get`, `Fanout/send`. Reads the usual
//! `RESTATE_*` environment.
//!
//! It runs on jemalloc, as a production binary on the runtime should (Restate's server does too):
//! a request allocates and frees across threads (handlers on the tokio workers, batches freed by
//! the journal writer), which glibc's malloc serves through locked arenas, a quarter of the
//! request path's CPU.

use restate_runtime::prelude::*;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Default)]
pub struct Noop;

#[service]
impl Noop {
    /// Returns its JSON input.
    #[handler]
    async fn echo(
        &self,
        _ctx: Context<'_>,
        input: serde_json::Value,
    ) -> HandlerResult<serde_json::Value> {
        Ok(input)
    }
}

#[derive(Default)]
pub struct Steps;

#[service]
impl Steps {
    /// Three journaled steps returning 1, 2 and 3; returns their sum.
    #[handler]
    async fn three(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        let mut sum = 0u64;
        for i in 1..=3u64 {
            sum += ctx
                .run(|| async move { Ok(i) })
                .name(format!("step-{i}"))
                .await?;
        }
        Ok(sum)
    }
}

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    /// Adds `n` to `count` and returns the new value.
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: i64) -> HandlerResult<i64> {
        let count = ctx.get::<i64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        Ok(count)
    }

    /// Returns `count`.
    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<i64> {
        Ok(ctx.get::<i64>("count").await?.unwrap_or(0))
    }
}

#[derive(Default)]
pub struct Fanout;

#[service]
impl Fanout {
    /// Sends `n` one-way `Counter/fan-{i}/add(1)` messages; returns `n`.
    #[handler]
    async fn send(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        for i in 0..n {
            ctx.object::<Counter>(format!("fan-{i}")).add(1).send();
        }
        Ok(n)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder()
        .release_heap(examples::release_jemalloc_heap)
        .build()?
        .serve()
        .await?;
    Ok(())
}

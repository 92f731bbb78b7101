//! The app `tests/ts-client/compat.mjs` drives with Restate's own TypeScript ingress client
//! (`@restatedev/restate-sdk-clients`): a service, an object, a workflow waiting on a durable
//! promise, an awakeable whose id is published in an object's state, and an ingress-private
//! handler.

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("Hello {name}!"))
    }

    /// Reachable from other handlers only: the ingress refuses it.
    #[handler(ingress_private)]
    async fn secret(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("psst, {name}"))
    }
}

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    /// Adds `n` to the key's count and returns the new count.
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        Ok(count)
    }

    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
        Ok(ctx.get::<u64>("count").await?.unwrap_or(0))
    }
}

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    /// Waits for the "clicked" promise (resolved by `click`).
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
        let code = ctx.promise::<String>("clicked").await?;
        Ok(format!("{email} verified with {code}"))
    }

    #[handler]
    async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
        ctx.resolve_promise("clicked", code).await?;
        Ok(())
    }
}

/// Where `Approval/ask` publishes its awakeable id, keyed by the caller's tag.
#[derive(Default)]
pub struct Mailbox;

#[object]
impl Mailbox {
    #[handler]
    async fn put(&self, ctx: ObjectContext<'_>, id: String) -> HandlerResult<()> {
        ctx.set("id", id);
        Ok(())
    }

    #[handler]
    async fn id(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<Option<String>> {
        Ok(ctx.get::<String>("id").await?)
    }
}

#[derive(Default)]
pub struct Approval;

#[service]
impl Approval {
    /// Creates an awakeable, publishes its id at `Mailbox/{tag}/id`, and returns
    /// `"{tag}: {value}"` once someone resolves it.
    #[handler]
    async fn ask(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (id, answer) = ctx.awakeable::<String>();
        ctx.object::<Mailbox>(tag.clone()).put(id).call().await?;
        let answer = answer.await?;
        Ok(format!("{tag}: {answer}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder().build()?.serve().await?;
    Ok(())
}

//! The client names of the first release still compile (deprecated in favour of
//! `client::<X>()`, `object::<X>(key)` and `workflow::<X>(key)`), as do handles passed by value
//! to `attach`, `cancel` and `kill` and reused afterwards.
#![allow(deprecated)]

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
        let counter = ctx.object_client::<CounterClient>("k");
        let signup = ctx.workflow_client::<SignupClient>("k");
        let sent = ctx.service_client::<GreeterClient>().ping().send();
        let _: () = ctx.attach(sent).await?;
        ctx.cancel(sent);
        // Rejections took a message: `&str` and `&String` still do.
        let reason = String::from("no");
        ctx.reject_awakeable("sign_1x", &reason)?;
        ctx.reject_awakeable("sign_1x", "no")?;
        Ok(format!(
            "{name} {} {}",
            counter.add(1).call().await?,
            signup.run().call().await?
        ))
    }

    #[handler]
    async fn ping(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// Outputs only needed `Serialize` (callers decoding with `.call()` need `Deserialize`).
    #[handler]
    async fn motto(&self, _ctx: Context<'_>) -> HandlerResult<&'static str> {
        Ok("durable")
    }
}

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn add(&self, _ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        Ok(n)
    }
}

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn run(&self, _ctx: WorkflowContext<'_>) -> HandlerResult<String> {
        Ok(String::new())
    }
}

async fn outside(handle: RuntimeHandle) -> Result<(), Box<dyn std::error::Error>> {
    let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
    let _ = handle.object_client::<CounterClient<RuntimeHandle>>("k");
    let _ = handle.workflow_client::<SignupClient<RuntimeHandle>>("k");
    let sent = greeter.greet("Ada".into()).send().await?;
    handle.cancel(sent).await?;
    let _: String = handle.attach(sent).await?;
    handle.kill(sent).await?;
    let _ = sent.invocation_id();
    Ok(())
}

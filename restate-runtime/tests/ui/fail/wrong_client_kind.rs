use restate_runtime::prelude::*;

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
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        // An object asked for as a service, and a service asked for as an object.
        let _ = ctx.client::<Counter>();
        let _ = ctx.object::<Greeter>("key");
        #[allow(deprecated)]
        let _ = ctx.service_client::<CounterClient>();
        Ok(0)
    }
}

/// Outside a handler, a client named without its caller.
#[allow(deprecated)]
fn outside(handle: RuntimeHandle) {
    let _ = handle.service_client::<GreeterClient>();
}

fn main() {}

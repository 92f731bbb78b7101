use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler(timeout = "10s")]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

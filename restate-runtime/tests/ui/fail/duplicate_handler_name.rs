use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler(name = "x")]
    async fn first(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(name = "x")]
    async fn second(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

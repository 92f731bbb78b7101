use restate_runtime::prelude::*;

pub trait SomeTrait {
    async fn greet(&self, ctx: Context<'_>) -> HandlerResult<()>;
}

pub struct Greeter;

#[service]
impl SomeTrait for Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

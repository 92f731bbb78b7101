use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, ctx: Context<'_>) -> HandlerResult<String> {
        Ok(ctx.key().to_owned())
    }
}

fn main() {}

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, ctx: Context<'_>) -> HandlerResult<()> {
        let _seen: Option<u64> = ctx.get("count").await?;
        Ok(())
    }
}

fn main() {}

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn peek(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<()> {
        ctx.set("count", 1u64);
        Ok(())
    }
}

fn main() {}

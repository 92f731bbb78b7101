use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        Ok(n + ctx.key().len() as u64)
    }

    #[handler]
    async fn peek(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<String> {
        Ok(ctx.key().to_owned())
    }
}

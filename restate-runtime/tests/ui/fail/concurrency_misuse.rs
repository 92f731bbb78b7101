use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Jobs;

#[service(concurrency = 2)]
impl Jobs {
    #[handler(concurrency = 0)]
    async fn zero(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(concurrency(key = Self::tenant))]
    async fn no_limit(&self, _ctx: Context<'_>, tenant: String) -> HandlerResult<()> {
        let _ = tenant;
        Ok(())
    }

    #[handler(concurrency(limit = 1, key = Self::tenant))]
    async fn key_without_input(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(concurrency(limit = 1, colour = "red"))]
    async fn unknown(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

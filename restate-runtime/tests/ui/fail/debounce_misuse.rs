use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Feeds;

#[service(debounce(period = "1s"))]
impl Feeds {
    #[handler(debounce(max_wait = "5m"))]
    async fn no_period(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(debounce(period = "30s", max_wait = "10s"))]
    async fn short_max_wait(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(debounce(period = "30s", key = Self::feed))]
    async fn key_without_input(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(debounce(period = "0s"))]
    async fn zero(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(debounce = "30s")]
    async fn not_a_list(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(cron = "0 2 * * *", debounce(period = "30s"))]
    async fn scheduled(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

#[derive(Default)]
pub struct Feed;

#[object]
impl Feed {
    #[handler(debounce(period = "30s"))]
    async fn refresh(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

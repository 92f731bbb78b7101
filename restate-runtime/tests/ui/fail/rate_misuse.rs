use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Mail;

#[service(rate(limit = 5, per = "1s"))]
impl Mail {
    #[handler(rate(limit = 5))]
    async fn no_period(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(rate(burst = 2, name = "mail"))]
    async fn burst_without_limit(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(rate(limit = 0, per = "soon", colour = "red"))]
    async fn bad_values(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(rate(limit = 1, per = "1s", key = Self::tenant))]
    async fn key_without_input(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(rate())]
    async fn empty(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

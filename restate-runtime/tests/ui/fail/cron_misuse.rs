use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Reports;

#[service(cron = "0 2 * * *")]
impl Reports {
    #[handler(cron = "0 2 * *")]
    async fn four_fields(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(cron = "0 0 30 2 *")]
    async fn never(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(timezone = "Europe/Paris")]
    async fn zone_without_cron(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(cron = "@daily", catch_up = "most", overlap = "sometimes")]
    async fn bad_policies(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler(cron = "@daily")]
    async fn raw(&self, _ctx: Context<'_>, _body: RawInput) -> HandlerResult<()> {
        Ok(())
    }
}

#[derive(Default)]
pub struct Invoices;

#[object]
impl Invoices {
    #[handler(cron = "@hourly")]
    async fn remind(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

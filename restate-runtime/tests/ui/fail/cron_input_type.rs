use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Reports;

#[service]
impl Reports {
    #[handler(cron = "0 2 * * *")]
    async fn nightly(&self, _ctx: Context<'_>, day: String) -> HandlerResult<()> {
        let _ = day;
        Ok(())
    }
}

fn main() {}

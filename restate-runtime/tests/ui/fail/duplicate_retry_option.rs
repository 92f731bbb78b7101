use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler(retry(max_attempts = 3, initial_interval = "1s", max_attempts = 5))]
    async fn ping(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    #[handler(name = "other")]
    async fn ping(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

use restate_runtime::prelude::*;
use std::rc::Rc;
use std::time::Duration;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn count(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        let shared = Rc::new(1u64);
        ctx.sleep(Duration::from_secs(1)).await?;
        Ok(*shared)
    }
}

fn main() {}

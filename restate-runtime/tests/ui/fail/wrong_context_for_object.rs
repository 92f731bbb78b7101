use restate_runtime::prelude::*;

pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn add(&self, _ctx: Context<'_>, _n: u64) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

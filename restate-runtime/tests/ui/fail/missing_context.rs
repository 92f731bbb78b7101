use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn ping(&self) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

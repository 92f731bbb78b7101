use restate_runtime::prelude::*;

/// Neither `Serialize` nor `Deserialize`.
pub struct Order {
    pub id: u64,
}

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn place(&self, _ctx: Context<'_>, order: Order) -> HandlerResult<u64> {
        Ok(order.id)
    }
}

fn main() {}

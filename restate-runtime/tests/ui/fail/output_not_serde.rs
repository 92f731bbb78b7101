use restate_runtime::prelude::*;

/// Not `Serialize`.
pub struct Receipt {
    pub total: u64,
}

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn checkout(&self, _ctx: Context<'_>) -> HandlerResult<Receipt> {
        Ok(Receipt { total: 1 })
    }
}

fn main() {}

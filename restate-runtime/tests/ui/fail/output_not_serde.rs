use restate_runtime::prelude::*;

#[derive(Serialize)]
pub struct Receipt {
    pub total: u64,
}

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    /// The output must also decode (callers read it), so `Serialize` alone is not enough.
    #[handler]
    async fn checkout(&self, _ctx: Context<'_>) -> HandlerResult<Receipt> {
        Ok(Receipt { total: 1 })
    }
}

fn main() {}

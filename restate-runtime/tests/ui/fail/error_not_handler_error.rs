use restate_runtime::prelude::*;

/// Not an `std::error::Error`, no conversion into `HandlerError`.
#[derive(Debug)]
pub struct OutOfStock;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn reserve(&self, _ctx: Context<'_>) -> Result<u64, OutOfStock> {
        Err(OutOfStock)
    }
}

fn main() {}

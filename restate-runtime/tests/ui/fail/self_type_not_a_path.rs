use restate_runtime::prelude::*;

#[service]
impl [u8; 4] {
    #[handler]
    async fn size(&self, _ctx: Context<'_>) -> HandlerResult<u64> {
        Ok(4)
    }
}

fn main() {}

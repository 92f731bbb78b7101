use restate_runtime::prelude::*;

pub struct Greeter;

#[service(retention = "soon")]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

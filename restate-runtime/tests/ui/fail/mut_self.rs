use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&mut self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

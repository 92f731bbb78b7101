use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet<T>(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

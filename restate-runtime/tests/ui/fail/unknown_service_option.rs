use restate_runtime::prelude::*;

pub struct Greeter;

#[service(private)]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

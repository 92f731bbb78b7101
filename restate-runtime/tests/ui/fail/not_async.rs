use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

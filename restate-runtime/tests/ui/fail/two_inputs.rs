use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, _name: String, _age: u32) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

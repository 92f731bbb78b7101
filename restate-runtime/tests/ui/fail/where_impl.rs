use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter
where
    Greeter: Default,
{
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

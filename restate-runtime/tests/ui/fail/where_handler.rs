use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()>
    where
        Self: Sized,
    {
        Ok(())
    }
}

fn main() {}

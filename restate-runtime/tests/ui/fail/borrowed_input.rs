// A borrowed input: the handler owns what it decodes, so it takes `String`, not `&str`.
use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: &str) -> HandlerResult<usize> {
        Ok(name.len())
    }

    #[handler]
    async fn sum(&self, _ctx: Context<'_>, values: &[u32]) -> HandlerResult<u32> {
        Ok(values.iter().sum())
    }
}

fn main() {}

use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> String {
        String::new()
    }
}

fn main() {}

use std::marker::PhantomData;

use restate_runtime::prelude::*;

pub struct Greeter<T>(PhantomData<T>);

#[service]
impl<T> Greeter<T> {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

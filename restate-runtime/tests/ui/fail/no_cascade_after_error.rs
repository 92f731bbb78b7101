// One broken handler is reported on its own: the service's other handlers, its client (with a
// method for the broken handler too) and its `Service` impl are still generated, so code using
// them reports nothing more.
use restate_runtime::prelude::*;

pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(name)
    }

    #[handler]
    async fn ping(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

pub fn use_client(client: GreeterClient<'_>) {
    let _ = client.ping();
    let _ = client.greet("Ada".into());
}

fn main() {
    let _ = <Greeter as restate_runtime::Service>::definition();
}

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: Option<String>) -> HandlerResult<String> {
        Ok(format!(
            "Hello {}",
            name.unwrap_or_else(|| "stranger".to_owned())
        ))
    }
}

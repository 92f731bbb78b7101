use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    /// Greets by name.
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("Hello {name}"))
    }

    #[handler]
    async fn ping(&self, _ctx: Context<'_>) -> Result<(), TerminalError> {
        Ok(())
    }

    /// An alias with the error fixed: `anyhow::Result<T>`, `std::io::Result<T>`.
    #[handler]
    async fn with_anyhow(&self, _ctx: Context<'_>) -> anyhow::Result<u32> {
        Ok(1)
    }

    #[handler]
    async fn with_io(&self, _ctx: Context<'_>) -> std::io::Result<()> {
        Ok(())
    }

    /// Not a handler: plain methods stay as they are.
    fn helper(&self) -> u32 {
        1
    }
}

#[test]
fn plain_methods_stay_callable() {
    assert_eq!(Greeter.helper(), 1);
}

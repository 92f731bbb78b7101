use restate_runtime::prelude::*;

pub struct Shapes;

#[service]
impl Shapes {
    #[handler]
    const LIMIT: u32 = 3;

    #[handler]
    async fn input(&self, _ctx: Context<'_>, _x: impl serde::de::DeserializeOwned) -> HandlerResult<u32> {
        Ok(1)
    }

    #[handler]
    async fn output(&self, _ctx: Context<'_>, x: u32) -> HandlerResult<impl serde::Serialize> {
        Ok(x)
    }

    #[handler]
    async unsafe fn risky(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler]
    async fn borrowed<'a>(&'a self, _ctx: Context<'a>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler]
    async fn swapped(&self, x: u32, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(x)
    }

    #[handler]
    async fn twice(&self, _ctx: Context<'_>, _again: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

pub struct Taken;

#[service(name = "restate")]
impl Taken {
    #[handler]
    async fn a(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}

use restate_runtime::prelude::*;

/// An alias whose `Ok` is not the `T` it is written with: the client would expect `u64`.
type Result<T> = std::result::Result<Vec<T>, HandlerError>;

pub struct Lister;

#[service]
impl Lister {
    #[handler]
    async fn list(&self, _ctx: Context<'_>) -> Result<u64> {
        Ok(vec![1, 2])
    }
}

fn main() {}

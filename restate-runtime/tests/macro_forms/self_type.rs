//! `Self` in a handler's input or output names the service's type, in the client too.

use restate_runtime::prelude::*;

#[derive(Default, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
pub struct Point {
    x: i64,
    y: i64,
}

#[service]
impl Point {
    #[handler]
    async fn mirror(&self, _ctx: Context<'_>, p: Self) -> HandlerResult<Self> {
        Ok(Point { x: -p.x, y: -p.y })
    }

    #[handler]
    async fn many(&self, _ctx: Context<'_>, points: Vec<Self>) -> HandlerResult<Option<Self>> {
        Ok(points.into_iter().next())
    }
}

/// The client's methods take and return the service's type, not the client's.
async fn calls_with_the_service_type(
    handle: restate_runtime::RuntimeHandle,
) -> Result<Option<Point>, ClientError> {
    let mirrored: Point = handle
        .client::<Point>()
        .mirror(Point { x: 1, y: 2 })
        .call()
        .await?;
    handle.client::<Point>().many(vec![mirrored]).call().await
}

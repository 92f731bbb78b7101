use restate_runtime::prelude::*;

#[service]
pub struct Shop;

fn main() {}

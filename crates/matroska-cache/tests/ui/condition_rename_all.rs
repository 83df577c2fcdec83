use matroska_cache::scopes::Condition;
use serde::Serialize;

#[derive(Serialize, Condition)]
#[serde(rename_all = "camelCase")]
struct Listing {
    category_id: u32,
}

fn main() {}

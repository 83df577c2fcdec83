use matroska_cache::scopes::Condition;
use serde::Serialize;

#[derive(Serialize, Condition)]
struct Listing {
    category: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    year: Option<u16>,
}

fn main() {}

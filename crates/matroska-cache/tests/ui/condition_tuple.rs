use matroska_cache::scopes::Condition;
use serde::Serialize;

#[derive(Serialize, Condition)]
struct Listing(String);

fn main() {}

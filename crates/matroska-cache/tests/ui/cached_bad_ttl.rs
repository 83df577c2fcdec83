use std::sync::LazyLock;
use matroska_cache::{cached, MatroskaCache};

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);

#[cached(cache = CACHE, ttl = "5 parsecs")]
async fn answer() -> u32 {
    42
}

fn main() {}

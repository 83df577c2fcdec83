use std::sync::LazyLock;
use matroska_cache::{cached, MatroskaCache};

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);

#[cached(cache = CACHE, ttl = "5m")]
async fn answer((a, b): (u32, u32)) -> u32 {
    a + b
}

fn main() {}

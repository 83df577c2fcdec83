use std::sync::LazyLock;
use matroska_cache::{cached, MatroskaCache};

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);

/// Not Serialize.
struct Pool;

#[cached(cache = CACHE, ttl = "5m")]
async fn answer(pool: &Pool, id: u32) -> u32 {
    let _ = pool;
    id
}

fn main() {}

use std::sync::LazyLock;
use matroska_cache::{cached, MatroskaCache};

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);

#[cached(cache = CACHE, ttl = "5m", cache_none = true)]
async fn answer() -> Result<u32, String> {
    Ok(42)
}

fn main() {}

use std::sync::LazyLock;
use matroska_cache::{cached, MatroskaCache};

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);

#[cached(cache = CACHE, ttl = "5m", refresh_after = "4m")]
async fn title(slug: &str) -> String {
    slug.to_owned()
}

#[cached(cache = CACHE, ttl = "5m", refresh_after = "5m")]
async fn never_refreshed(id: u64) -> u64 {
    id
}

fn main() {}

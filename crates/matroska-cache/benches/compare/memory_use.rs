//! Redis memory per entry: `put` of a 300-byte value with 3 dependencies against a bare
//! `SET` of the same value, measured as the growth of `used_memory`.

use std::time::Duration;

use matroska_cache::MatroskaCache;
use redis::aio::ConnectionManager;

use crate::ops::{deps, VALUE_LEN};

/// Entries per measurement.
const ENTRIES: usize = 100_000;

/// Bytes per entry: ours, then the bare `SET`'s.
pub struct MemoryUse {
    pub ours: f64,
    pub base: f64,
}

async fn used_memory(conn: &mut ConnectionManager) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// Measures both on an emptied server.
pub async fn redis(cache: &MatroskaCache, raw: &ConnectionManager) -> MemoryUse {
    let mut conn = raw.clone();
    let value = "v".repeat(VALUE_LEN);
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");

    let before = used_memory(&mut conn).await;
    for start in (0..ENTRIES).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..start + 1000 {
            pipe.cmd("SET")
                .arg(format!("raw:k{i}"))
                .arg(&value)
                .arg("PX")
                .arg(3_600_000)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.expect("SET");
    }
    let base = (used_memory(&mut conn).await - before) / ENTRIES as f64;

    let before = used_memory(&mut conn).await;
    for i in 0..ENTRIES {
        let ttl = Duration::from_secs(3600);
        cache
            .put(&format!("k{i}"), &value, deps(i), ttl)
            .await
            .expect("put");
    }
    let ours = (used_memory(&mut conn).await - before) / ENTRIES as f64;
    MemoryUse { ours, base }
}

/// Prints the measurement as a Markdown table.
pub fn print(m: &MemoryUse) {
    println!("| per entry (300 B value, {ENTRIES} entries) | ours, 3 deps | bare SET PX | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| Redis `used_memory` growth | {:.0} B | {:.0} B | {:.2}x |",
        m.ours,
        m.base,
        m.ours / m.base
    );
}

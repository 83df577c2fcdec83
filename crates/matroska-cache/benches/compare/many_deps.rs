//! Invalidations that name many dependencies, and invalidations of dependencies nobody
//! depends on (issue 10, A.5).
//!
//! - One `invalidate` of 50,000 and 500,000 dependencies with one dependent each, against
//!   `UNLINK` of the same entry keys in batches of 1,000, with a `GET` loop on another
//!   connection measuring how long Redis stalled at a time (the limit is 50 ms).
//! - 100,000 invalidations of distinct dependencies without dependents: Redis memory and key
//!   count before and after (nothing may stay behind per dependency), and their throughput
//!   against `UNLINK` of one missing key.

use std::time::{Duration, Instant};

use matroska_cache::{dep, Dep, MatroskaCache};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::fanout::{fill, flush, probe, summary, unlink_measured, Probe};
/// Concurrent callers for the no-dependents invalidations.
const TASKS: usize = 32;

/// One measured many-dependency invalidation.
pub struct ManyDeps {
    pub deps: usize,
    pub ours: Duration,
    pub base: Duration,
    pub ours_probe: Probe,
    pub base_probe: Probe,
    /// Entries left that should have been dropped.
    pub leftover: usize,
}

fn dep_of(i: usize) -> Vec<Dep> {
    vec![dep::id("m", i)]
}

/// The entry keys of the prefix still present.
async fn entries_left(conn: &mut ConnectionManager, prefix: &str) -> usize {
    let mut scan = conn
        .scan_match::<_, String>(format!("{{{prefix}}}:d:f*"))
        .await
        .expect("SCAN");
    let mut left = 0;
    while let Some(key) = scan.next_item().await {
        key.expect("SCAN item");
        left += 1;
    }
    left
}

pub async fn redis(
    url: &str,
    prefix: &str,
    cache: &MatroskaCache,
    raw: &ConnectionManager,
    sizes: &[usize],
) -> Vec<ManyDeps> {
    let mut rows = Vec::new();
    let mut conn = raw.clone();
    for &n in sizes {
        flush(&mut conn).await;
        fill(cache, 0..n, dep_of).await;
        let (base, base_probe) = unlink_measured(url, prefix, &mut conn, n).await;
        flush(&mut conn).await;

        fill(cache, 0..n, dep_of).await;
        let deps: Vec<Dep> = (0..n).flat_map(dep_of).collect();
        let running = probe(url);
        let start = Instant::now();
        let dropped = cache.invalidate(&deps).await.expect("invalidate");
        let ours = start.elapsed();
        let ours_probe = summary(running.finish());
        assert_eq!(dropped, n as u64, "every dependent dropped, each once");
        let leftover = entries_left(&mut conn, prefix).await;
        eprintln!("invalidate {n} dependencies: {ours:.2?} (UNLINK {base:.2?})");
        rows.push(ManyDeps {
            deps: n,
            ours,
            base,
            ours_probe,
            base_probe,
            leftover,
        });
    }
    rows
}

pub fn print(rows: &[ManyDeps]) {
    println!("| dependencies (1 dependent each) | ours | UNLINK same keys x1000 | worst GET during ours | worst GET during UNLINK | target (worst GET) | not dropped |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let target = if r.ours_probe.worst <= Duration::from_millis(50) {
            "<= 50 ms, met"
        } else {
            "<= 50 ms, **missed**"
        };
        println!(
            "| {} | {:.3?} | {:.3?} | {:.1?} ({} GETs) | {:.1?} ({} GETs) | {target} | {} |",
            r.deps,
            r.ours,
            r.base,
            r.ours_probe.worst,
            r.ours_probe.gets,
            r.base_probe.worst,
            r.base_probe.gets,
            r.leftover,
        );
    }
}

/// Memory and key count of the server.
async fn footprint(conn: &mut ConnectionManager) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .expect("DBSIZE");
    (used, keys)
}

/// Runs `count` calls of `op(i)` over [`TASKS`] tasks; the elapsed time.
async fn spread<F, Fut>(count: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in (t..count).step_by(TASKS) {
                    op(i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}

/// `count` invalidations of distinct dependencies without dependents.
pub async fn without_dependents(cache: &MatroskaCache, raw: &ConnectionManager, count: usize) {
    let mut conn = raw.clone();
    flush(&mut conn).await;
    // Let the async flush finish and the first connection's epoch exist before measuring.
    cache
        .put("warm", "x", [], Duration::from_secs(60))
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = footprint(&mut conn).await;
    let c = cache.clone();
    let ours = spread(count, move |i| {
        let c = c.clone();
        async move {
            c.invalidate([dep::id("nobody", i)])
                .await
                .expect("invalidate");
        }
    })
    .await;
    let after = footprint(&mut conn).await;
    let r = raw.clone();
    let base = spread(count, move |i| {
        let mut r = r.clone();
        async move {
            let _: usize = r.unlink(format!("missing{i}")).await.expect("UNLINK");
        }
    })
    .await;
    println!(
        "| measure | before | after {count} invalidations | UNLINK of a missing key x{count} |"
    );
    println!("|---|---|---|---|");
    println!(
        "| Redis used_memory | {} B | {} B ({:+} B) | |",
        before.0,
        after.0,
        after.0 as i64 - before.0 as i64
    );
    println!("| keys | {} | {} | |", before.1, after.1);
    println!(
        "| time, {TASKS} tasks | | {:.2?} ({:.0}/s) | {:.2?} ({:.0}/s), ours {:.2}x of it |",
        ours,
        count as f64 / ours.as_secs_f64(),
        base,
        count as f64 / base.as_secs_f64(),
        base.as_secs_f64() / ours.as_secs_f64()
    );
}

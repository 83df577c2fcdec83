//! Single operations next to their baselines: `get`, `put` with 3 dependencies and
//! `invalidate` of one dependent on Redis (vs `GET`, `SET PX`, `UNLINK` through the same kind
//! of connection), and `get` and `put` in memory (vs moka used directly).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, Dep, MatroskaCache, MemoryBackend};
use redis::aio::ConnectionManager;

/// Operations per row on Redis (about a second at one task).
const REDIS_OPS: usize = 20_000;
/// Operations per row in memory (each takes well under a microsecond).
const MEMORY_OPS: usize = 1_000_000;
/// The value size of every `put`.
pub const VALUE_LEN: usize = 300;

/// Throughput and latency of one side of a row.
pub struct Side {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// One row of the table: our operation, its baseline, and the target ratio if the issue
/// names one.
pub struct Comparison {
    name: &'static str,
    tasks: usize,
    ours: Side,
    baseline: &'static str,
    base: Side,
    target: Option<f64>,
}

impl Comparison {
    fn ratio(&self) -> f64 {
        self.ours.ops_per_sec / self.base.ops_per_sec
    }
}

/// Prints the rows as a Markdown table.
pub fn print(rows: &[Comparison]) {
    println!("| operation | tasks | ours | p50 | p99 | baseline | baseline | p50 | p99 | ratio | target |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let target = match r.target {
            Some(t) if r.ratio() >= t => format!(">= {t}x, met"),
            Some(t) => format!(">= {t}x, **missed**"),
            None => String::new(),
        };
        println!(
            "| {} | {} | {:.0}/s | {:.1?} | {:.1?} | {} | {:.0}/s | {:.1?} | {:.1?} | {:.2}x | {target} |",
            r.name,
            r.tasks,
            r.ours.ops_per_sec,
            r.ours.p50,
            r.ours.p99,
            r.baseline,
            r.base.ops_per_sec,
            r.base.p50,
            r.base.p99,
            r.ratio(),
        );
    }
}

/// Runs `op(i)` for `i` in `0..ops` over `tasks` concurrent tasks; returns throughput and
/// latencies.
async fn measure<F, Fut>(ops: usize, tasks: usize, op: F) -> Side
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(ops / tasks + 1);
                let mut i = t;
                while i < ops {
                    let begin = Instant::now();
                    op(i).await;
                    latencies.push(begin.elapsed());
                    i += tasks;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(ops);
    for handle in handles {
        all.extend(handle.await.expect("a measured task panicked"));
    }
    let elapsed = start.elapsed();
    all.sort();
    Side {
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// The 3 dependencies of entry `i`: its own id, a shared author, a shared list.
pub fn deps(i: usize) -> [Dep; 3] {
    [
        dep::id("article", i),
        dep::id("author", i % 100),
        dep::tag("list"),
    ]
}

/// Our `put` of a 300-byte value with 3 dependencies, on any backend.
async fn put_with_deps(cache: &MatroskaCache, ops: usize, tasks: usize) -> Side {
    let cache = cache.clone();
    let value = "v".repeat(VALUE_LEN);
    measure(ops, tasks, move |i| {
        let (cache, value) = (cache.clone(), value.clone());
        async move {
            let ttl = Duration::from_secs(600);
            cache
                .put(&format!("k{i}"), &value, deps(i), ttl)
                .await
                .expect("put")
        }
    })
    .await
}

/// Our `get` of keys `put_with_deps` stored, on any backend.
async fn get_hits(cache: &MatroskaCache, ops: usize, tasks: usize) -> Side {
    let cache = cache.clone();
    measure(ops, tasks, move |i| {
        let cache = cache.clone();
        async move {
            let hit: Option<String> = cache.get(&format!("k{}", i % 1000)).await.expect("get");
            assert!(hit.is_some(), "k{} should be cached", i % 1000);
        }
    })
    .await
}

/// The Redis rows: `cache` (a Redis-backed cache) against `raw`, a connection manager to the
/// same server.
pub async fn redis(cache: &MatroskaCache, raw: &ConnectionManager) -> Vec<Comparison> {
    let value = "v".repeat(VALUE_LEN);
    let mut rows = Vec::new();
    for tasks in [1, 32] {
        let ours = put_with_deps(cache, REDIS_OPS, tasks).await;
        let (r, v) = (raw.clone(), value.clone());
        let base = measure(REDIS_OPS, tasks, move |i| {
            let (mut r, v) = (r.clone(), v.clone());
            async move {
                let _: () = redis::cmd("SET")
                    .arg(format!("raw{i}"))
                    .arg(v)
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut r)
                    .await
                    .expect("SET");
            }
        })
        .await;
        rows.push(Comparison {
            name: "redis put, 3 deps, 300 B",
            tasks,
            ours,
            baseline: "SET PX",
            base,
            target: Some(if tasks == 1 { 0.7 } else { 0.5 }),
        });

        let ours = get_hits(cache, REDIS_OPS, tasks).await;
        let r = raw.clone();
        let base = measure(REDIS_OPS, tasks, move |i| {
            let mut r = r.clone();
            async move {
                let hit: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("raw{}", i % 1000))
                    .query_async(&mut r)
                    .await
                    .expect("GET");
                assert!(hit.is_some());
            }
        })
        .await;
        rows.push(Comparison {
            name: "redis get (hit)",
            tasks,
            ours,
            baseline: "GET",
            base,
            target: Some(0.9),
        });

        // Invalidation of a dependency with one dependent, vs UNLINK of that one key.
        for i in 0..REDIS_OPS {
            let ttl = Duration::from_secs(600);
            let one = [dep::id("one", i)];
            cache
                .put(&format!("one{i}"), &value, one, ttl)
                .await
                .expect("put");
        }
        let c = cache.clone();
        let ours = measure(REDIS_OPS, tasks, move |i| {
            let c = c.clone();
            async move {
                let dropped = c.invalidate([dep::id("one", i)]).await.expect("invalidate");
                assert_eq!(dropped, 1, "one{i} should have been dropped");
            }
        })
        .await;
        let mut conn = raw.clone();
        for i in 0..REDIS_OPS {
            let _: () = redis::cmd("SET")
                .arg(format!("rawone{i}"))
                .arg(&value)
                .query_async(&mut conn)
                .await
                .expect("SET");
        }
        let r = raw.clone();
        let base = measure(REDIS_OPS, tasks, move |i| {
            let mut r = r.clone();
            async move {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(format!("rawone{i}"))
                    .query_async(&mut r)
                    .await
                    .expect("UNLINK");
                assert_eq!(n, 1);
            }
        })
        .await;
        rows.push(Comparison {
            name: "redis invalidate, 1 dependent",
            tasks,
            ours,
            baseline: "UNLINK 1 key",
            base,
            target: None,
        });
    }
    rows
}

/// The memory rows: our memory backend against moka used directly, on 1 and 2 threads.
pub async fn memory() -> Vec<Comparison> {
    let value = "v".repeat(VALUE_LEN);
    let memory = MatroskaCache::new(
        MemoryBackend::builder()
            .max_entries(1_000_000)
            .build()
            .expect("memory backend"),
    );
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(1_000_000);
    let mut rows = Vec::new();
    for tasks in [1, 2] {
        let ours = put_with_deps(&memory, MEMORY_OPS, tasks).await;
        let (m, v) = (moka.clone(), Arc::<[u8]>::from(value.as_bytes()));
        let base = measure(MEMORY_OPS, tasks, move |i| {
            let (m, v) = (m.clone(), Arc::clone(&v));
            async move { m.insert(format!("raw{i}"), v) }
        })
        .await;
        rows.push(Comparison {
            name: "memory put, 3 deps",
            tasks,
            ours,
            baseline: "moka insert",
            base,
            target: None,
        });

        let ours = get_hits(&memory, MEMORY_OPS, tasks).await;
        let m = moka.clone();
        let base = measure(MEMORY_OPS, tasks, move |i| {
            let m = m.clone();
            async move { assert!(m.get(&format!("raw{}", i % 1000)).is_some()) }
        })
        .await;
        rows.push(Comparison {
            name: "memory get (hit)",
            tasks,
            ours,
            baseline: "moka get",
            base,
            target: Some(0.5),
        });
    }
    rows
}

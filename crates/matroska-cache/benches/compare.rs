//! Each operation next to its physical baseline, in one run on this machine:
//! the Redis backend against raw redis-rs on the same kind of connection (one multiplexed
//! connection manager), and the memory backend against moka used directly.
//!
//! ```text
//! cargo bench -p matroska-cache --bench compare
//! ```
//!
//! Prints throughput, p50 and p99 latency, and our throughput as a ratio of the baseline's.
//! (Fan-out invalidation at 10k-1M dependents and memory per entry are not measured yet.)

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, MatroskaCache, MemoryBackend, RedisBackend};
use matroska_test_support::RedisServer;
use redis::aio::ConnectionManager;

const OPS: usize = 20_000;
const VALUE_LEN: usize = 300;

struct Row {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `op(i)` OPS times over `tasks` concurrent tasks; returns throughput and latencies.
async fn measure<F, Fut>(tasks: usize, op: F) -> Row
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
                let mut latencies = Vec::with_capacity(OPS / tasks + 1);
                let mut i = t;
                while i < OPS {
                    let begin = Instant::now();
                    op(i).await;
                    latencies.push(begin.elapsed());
                    i += tasks;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(OPS);
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    Row {
        ops_per_sec: OPS as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

fn print(name: &str, tasks: usize, ours: Row, base: Row, baseline: &str) {
    println!(
        "| {name} | {tasks} | {:.0}/s | {:.1?} | {:.1?} | {baseline} | {:.0}/s | {:.1?} | {:.1?} | {:.2}x |",
        ours.ops_per_sec,
        ours.p50,
        ours.p99,
        base.ops_per_sec,
        base.p50,
        base.p99,
        ours.ops_per_sec / base.ops_per_sec
    );
}

fn deps(i: usize) -> [matroska_cache::Dep; 3] {
    [
        dep::id("article", i),
        dep::id("author", i % 100),
        dep::tag("list"),
    ]
}

/// Our `put` of a 300-byte value with 3 dependencies, on any backend.
async fn put_with_deps(cache: &MatroskaCache, tasks: usize) -> Row {
    let cache = cache.clone();
    let value = "v".repeat(VALUE_LEN);
    measure(tasks, move |i| {
        let (cache, value) = (cache.clone(), value.clone());
        async move {
            let ttl = Duration::from_secs(600);
            cache
                .put(&format!("k{i}"), &value, deps(i), ttl)
                .await
                .unwrap()
        }
    })
    .await
}

/// Our `get` of keys `put_with_deps` stored, on any backend.
async fn get_hits(cache: &MatroskaCache, tasks: usize) -> Row {
    let cache = cache.clone();
    measure(tasks, move |i| {
        let cache = cache.clone();
        async move {
            let hit: Option<String> = cache.get(&format!("k{}", i % 1000)).await.unwrap();
            assert!(hit.is_some());
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let value = "v".repeat(VALUE_LEN);
    println!("| operation | tasks | ours | p50 | p99 | baseline | baseline | p50 | p99 | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");

    // Redis backend vs raw redis-rs.
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "bench")
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    let raw: ConnectionManager = redis::Client::open(server.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    for tasks in [1, 32] {
        let ours = put_with_deps(&cache, tasks).await;
        let (r, v) = (raw.clone(), value.clone());
        let base = measure(tasks, move |i| {
            let (mut r, v) = (r.clone(), v.clone());
            async move {
                let _: () = redis::cmd("SET")
                    .arg(format!("raw{i}"))
                    .arg(v)
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut r)
                    .await
                    .unwrap();
            }
        })
        .await;
        print("redis put, 3 deps, 300 B", tasks, ours, base, "SET PX");

        let ours = get_hits(&cache, tasks).await;
        let r = raw.clone();
        let base = measure(tasks, move |i| {
            let mut r = r.clone();
            async move {
                let hit: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("raw{}", i % 1000))
                    .query_async(&mut r)
                    .await
                    .unwrap();
                assert!(hit.is_some());
            }
        })
        .await;
        print("redis get (hit)", tasks, ours, base, "GET");
    }

    // Memory backend vs moka directly.
    let memory = MatroskaCache::new(
        MemoryBackend::builder()
            .max_entries(1_000_000)
            .build()
            .unwrap(),
    );
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(1_000_000);
    for tasks in [1, 2] {
        let ours = put_with_deps(&memory, tasks).await;
        let (m, v) = (moka.clone(), Arc::<[u8]>::from(value.as_bytes()));
        let base = measure(tasks, move |i| {
            let (m, v) = (m.clone(), Arc::clone(&v));
            async move { m.insert(format!("raw{i}"), v) }
        })
        .await;
        print("memory put, 3 deps", tasks, ours, base, "moka insert");

        let ours = get_hits(&memory, tasks).await;
        let m = moka.clone();
        let base = measure(tasks, move |i| {
            let m = m.clone();
            async move { assert!(m.get(&format!("raw{}", i % 1000)).is_some()) }
        })
        .await;
        print("memory get (hit)", tasks, ours, base, "moka get");
    }
}

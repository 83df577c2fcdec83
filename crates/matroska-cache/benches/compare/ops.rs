//! Single operations next to their baselines: `get`, `put` with 3 dependencies and
//! `invalidate` of one dependent on Redis (vs `GET`, `SET PX`, `UNLINK` through the same kind
//! of connection), and `get` and `put` in memory (vs moka used directly).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, Dep, MatroskaCache, MemoryBackend};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

/// Operations per row on Redis (about a second at one task).
const REDIS_OPS: usize = 20_000;
/// Operations per row in memory (each takes well under a microsecond).
const MEMORY_OPS: usize = 500_000;
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

/// One measured operation: `op(i)` for the `i`-th call.
type Op = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
/// Prepares the store before a round (for operations that consume what they act on).
type Setup = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Boxes an operation (both sides pay the same boxing).
fn op<F, Fut>(f: F) -> Op
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)))
}

fn setup<F, Fut>(f: F) -> Setup
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// Rounds per side: ours and the baseline alternate, and each side's median round counts,
/// so a slow moment of the machine does not land on one side only. At least `MIN_ROUNDS`;
/// more, up to `MAX_ROUNDS`, until each side ran for `MIN_TIME` in all: a round of a fast
/// operation at 32 tasks takes a tenth of a second, too short to be steady on 2 busy cores.
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 15;
const MIN_TIME: Duration = Duration::from_secs(2);

/// Runs `op(i)` for `i` in `0..ops` over `tasks` concurrent tasks; returns throughput and
/// latencies.
async fn measure(ops: usize, tasks: usize, op: &Op) -> Side {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = Arc::clone(op);
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

/// Both sides, the same number of rounds each (see [`MIN_ROUNDS`]), alternating; the median
/// round of each.
async fn versus(
    ops: usize,
    tasks: usize,
    ours: (&Op, Option<&Setup>),
    base: (&Op, Option<&Setup>),
) -> (Side, Side) {
    let (mut o, mut b) = (Vec::new(), Vec::new());
    let (mut ours_time, mut base_time) = (Duration::ZERO, Duration::ZERO);
    while o.len() < MIN_ROUNDS
        || (o.len() < MAX_ROUNDS && (ours_time < MIN_TIME || base_time < MIN_TIME))
    {
        for ((op, prepare), results, time) in [
            (ours, &mut o, &mut ours_time),
            (base, &mut b, &mut base_time),
        ] {
            if let Some(prepare) = prepare {
                prepare().await;
            }
            let started = Instant::now();
            results.push(measure(ops, tasks, op).await);
            *time += started.elapsed();
        }
    }
    let median = |mut sides: Vec<Side>| {
        sides.sort_by(|x, y| x.ops_per_sec.total_cmp(&y.ops_per_sec));
        sides.swap_remove(sides.len() / 2)
    };
    (median(o), median(b))
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
fn put_with_deps(cache: &MatroskaCache) -> Op {
    let (cache, value): (_, Arc<str>) = (cache.clone(), "v".repeat(VALUE_LEN).into());
    op(move |i| {
        let (cache, value) = (cache.clone(), Arc::clone(&value));
        async move {
            let ttl = Duration::from_secs(600);
            cache
                .put(&format!("k{i}"), &*value, deps(i), ttl)
                .await
                .expect("put")
        }
    })
}

/// Our `get` of keys `put_with_deps` stored, on any backend.
fn get_hits(cache: &MatroskaCache) -> Op {
    let cache = cache.clone();
    op(move |i| {
        let cache = cache.clone();
        async move {
            let hit: Option<String> = cache.get(&format!("k{}", i % 1000)).await.expect("get");
            assert!(hit.is_some(), "k{} should be cached", i % 1000);
        }
    })
}

/// The Redis rows: `cache` (a Redis-backed cache) against `raw`, a connection manager to the
/// same server.
pub async fn redis(cache: &MatroskaCache, raw: &ConnectionManager) -> Vec<Comparison> {
    redis_rows(cache, raw, "redis").await
}

/// The same rows on a Redis Cluster: `cache` spread over its masters, against redis-rs's own
/// cluster connection (`raw`) doing the plain commands.
pub async fn cluster(cache: &MatroskaCache, raw: &ClusterConnection) -> Vec<Comparison> {
    redis_rows(cache, raw, "cluster").await
}

/// Our invalidation of `one{i}`'s only dependency (it must drop exactly that entry).
fn invalidate_one(cache: &MatroskaCache) -> Op {
    let c = cache.clone();
    op(move |i| {
        let c = c.clone();
        async move {
            let dropped = c.invalidate([dep::id("one", i)]).await.expect("invalidate");
            assert_eq!(dropped, 1, "one{i} should have been dropped");
        }
    })
}

/// Stores the entries [`invalidate_one`] drops.
fn fill_one(cache: &MatroskaCache) -> Setup {
    let (c, v): (_, Arc<str>) = (cache.clone(), "v".repeat(VALUE_LEN).into());
    setup(move || {
        let (c, v) = (c.clone(), Arc::clone(&v));
        async move {
            for i in 0..REDIS_OPS {
                let one = [dep::id("one", i)];
                let ttl = Duration::from_secs(600);
                c.put(&format!("one{i}"), &*v, one, ttl).await.expect("put");
            }
        }
    })
}

/// One server, the same operations on a cache split into 16 shards (`sharded`) against one
/// shard (`one`, the default there): what sharding costs where one thread serves every shard.
pub async fn shards_on_one_server(one: &MatroskaCache, sharded: &MatroskaCache) -> Vec<Comparison> {
    let mut rows = Vec::new();
    for tasks in [1, 32] {
        let (ours, base) = versus(
            REDIS_OPS,
            tasks,
            (&put_with_deps(sharded), None),
            (&put_with_deps(one), None),
        )
        .await;
        rows.push(Comparison {
            name: "redis put, 3 deps, 16 shards",
            tasks,
            ours,
            baseline: "1 shard",
            base,
            target: None,
        });
        let (ours, base) = versus(
            REDIS_OPS,
            tasks,
            (&invalidate_one(sharded), Some(&fill_one(sharded))),
            (&invalidate_one(one), Some(&fill_one(one))),
        )
        .await;
        rows.push(Comparison {
            name: "redis invalidate, 1 dependent, 16 shards",
            tasks,
            ours,
            baseline: "1 shard",
            base,
            target: None,
        });
    }
    rows
}

/// The rows of one kind of Redis deployment (`label`: `redis` or `cluster`).
async fn redis_rows<R>(cache: &MatroskaCache, raw: &R, label: &'static str) -> Vec<Comparison>
where
    R: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let value: Arc<str> = "v".repeat(VALUE_LEN).into();
    let raw_set = {
        let (r, v) = (raw.clone(), Arc::clone(&value));
        op(move |i| {
            let (mut r, v) = (r.clone(), Arc::clone(&v));
            async move {
                let _: () = redis::cmd("SET")
                    .arg(format!("raw{i}"))
                    .arg(&*v)
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut r)
                    .await
                    .expect("SET");
            }
        })
    };
    let raw_get = {
        let r = raw.clone();
        op(move |i| {
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
    };
    // Invalidation of a dependency with one dependent, vs UNLINK of that one key; each
    // round first stores what it drops.
    let (invalidate_one, fill_one) = (invalidate_one(cache), fill_one(cache));
    let unlink_one = {
        let r = raw.clone();
        op(move |i| {
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
    };
    let fill_raw_one = {
        let (r, v) = (raw.clone(), Arc::clone(&value));
        setup(move || {
            let (r, v) = (r.clone(), Arc::clone(&v));
            async move {
                // 100 at a time, one command each: a cluster refuses multi-slot pipelines.
                for start in (0..REDIS_OPS).step_by(100) {
                    let sets = (start..(start + 100).min(REDIS_OPS)).map(|i| {
                        let (mut r, v) = (r.clone(), Arc::clone(&v));
                        async move {
                            let _: () = redis::cmd("SET")
                                .arg(format!("rawone{i}"))
                                .arg(&*v)
                                .query_async(&mut r)
                                .await
                                .expect("SET");
                        }
                    });
                    futures_util::future::join_all(sets).await;
                }
            }
        })
    };

    let (put, get) = (put_with_deps(cache), get_hits(cache));
    let mut rows = Vec::new();
    for tasks in [1, 32] {
        let (ours, base) = versus(REDIS_OPS, tasks, (&put, None), (&raw_set, None)).await;
        rows.push(Comparison {
            name: if label == "redis" {
                "redis put, 3 deps, 300 B"
            } else {
                "cluster put, 3 deps, 300 B"
            },
            tasks,
            ours,
            baseline: "SET PX",
            base,
            // The cluster's target is at 32 tasks only.
            target: match (label, tasks) {
                ("cluster", 1) => None,
                (_, 1) => Some(0.7),
                _ => Some(0.5),
            },
        });
        let (ours, base) = versus(REDIS_OPS, tasks, (&get, None), (&raw_get, None)).await;
        rows.push(Comparison {
            name: if label == "redis" {
                "redis get (hit)"
            } else {
                "cluster get (hit)"
            },
            tasks,
            ours,
            baseline: "GET",
            base,
            target: Some(0.9),
        });
        let (ours, base) = versus(
            REDIS_OPS,
            tasks,
            (&invalidate_one, Some(&fill_one)),
            (&unlink_one, Some(&fill_raw_one)),
        )
        .await;
        rows.push(Comparison {
            name: if label == "redis" {
                "redis invalidate, 1 dependent"
            } else {
                "cluster invalidate, 1 dependent"
            },
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
    let memory = MatroskaCache::new(
        MemoryBackend::builder()
            .max_entries(MEMORY_OPS as u64)
            .build()
            .expect("memory backend"),
    );
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(MEMORY_OPS as u64);
    let value = Arc::<[u8]>::from("v".repeat(VALUE_LEN).as_bytes());
    let moka_insert = {
        let m = moka.clone();
        op(move |i| {
            let (m, v) = (m.clone(), Arc::clone(&value));
            async move { m.insert(format!("raw{i}"), v) }
        })
    };
    let moka_get = {
        let m = moka.clone();
        op(move |i| {
            let m = m.clone();
            async move { assert!(m.get(&format!("raw{}", i % 1000)).is_some()) }
        })
    };
    let (put, get) = (put_with_deps(&memory), get_hits(&memory));
    let mut rows = Vec::new();
    for tasks in [1, 2] {
        let (ours, base) = versus(MEMORY_OPS, tasks, (&put, None), (&moka_insert, None)).await;
        rows.push(Comparison {
            name: "memory put, 3 deps",
            tasks,
            ours,
            baseline: "moka insert",
            base,
            target: None,
        });
        let (ours, base) = versus(MEMORY_OPS, tasks, (&get, None), (&moka_get, None)).await;
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

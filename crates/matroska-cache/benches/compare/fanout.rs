//! Fan-out invalidation: one dependency with 10,000 to 1,000,000 dependents, against deleting
//! the same entries the fastest way the baseline knows (Redis: `UNLINK` of the same keys in
//! batches of 1,000, the keys known in advance; memory: moka's `invalidate` per key).
//!
//! While each Redis invalidation runs, a separate client loops on `GET` (its worst latency is
//! how long Redis stalled at a time), and another task re-caches a sample of the keys being
//! dropped once the drop has visibly begun: every re-cached entry must survive, and nothing
//! else may.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, Dep, MatroskaCache, MemoryBackend};
use matroska_test_support::GetProbe;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::ops::VALUE_LEN;

/// How many keys the re-caching task writes during one invalidation (at most).
const RECACHE_SAMPLE: usize = 1000;
/// The baseline's batch size.
const UNLINK_BATCH: usize = 1000;

/// One measured fan-out.
pub struct FanOut {
    pub backend: &'static str,
    pub dependents: usize,
    pub threads: usize,
    pub ours: Duration,
    pub baseline: &'static str,
    pub base: Duration,
    /// Worst and count of the concurrent GET loop's latencies (Redis only), ours then base.
    pub probe: Option<(Probe, Probe)>,
    /// Entries re-cached while the invalidation ran, and how many of them survived.
    pub recached: usize,
    pub survived: usize,
    /// Entries left that should have been dropped.
    pub leftover: usize,
}

impl FanOut {
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.base.as_secs_f64()
    }
}

/// What the concurrent GET loop saw.
#[derive(Clone, Copy, Default)]
pub struct Probe {
    pub gets: usize,
    pub worst: Duration,
}

/// Prints the rows as a Markdown table.
pub fn print(rows: &[FanOut]) {
    println!("| backend | dependents | threads | ours | baseline | baseline | ratio (time) | target | worst GET during ours | worst GET during baseline | re-cached during ours | survived | not dropped |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let target = if r.backend == "redis" && r.dependents == 100_000 {
            if r.ratio() <= 3.0 {
                "<= 3x, met"
            } else {
                "<= 3x, **missed**"
            }
        } else {
            ""
        };
        let (ours_probe, base_probe) = match r.probe {
            Some((o, b)) => (
                format!("{:.1?} ({} GETs)", o.worst, o.gets),
                format!("{:.1?} ({} GETs)", b.worst, b.gets),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {} | {:.3?} | {} | {:.3?} | {:.2}x | {target} | {ours_probe} | {base_probe} | {} | {} | {} |",
            r.backend,
            r.dependents,
            r.threads,
            r.ours,
            r.baseline,
            r.base,
            r.ratio(),
            r.recached,
            r.survived,
            r.leftover,
        );
    }
}

/// A `GET` loop on its own connection and thread (no pause) while something runs.
pub fn probe(url: &str) -> GetProbe {
    GetProbe::start(url, "probe", Duration::ZERO)
}

/// What the loop saw: how many GETs, and the slowest.
pub fn summary(latencies: Vec<Duration>) -> Probe {
    Probe {
        gets: latencies.len(),
        worst: latencies.last().copied().unwrap_or_default(),
    }
}

/// Puts `keys` with `deps_of(i)` over 32 tasks.
pub async fn fill(
    cache: &MatroskaCache,
    keys: std::ops::Range<usize>,
    deps_of: fn(usize) -> Vec<Dep>,
) {
    let value: Arc<str> = "v".repeat(VALUE_LEN).into();
    let tasks = 32;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (cache, value, keys) = (cache.clone(), Arc::clone(&value), keys.clone());
            tokio::spawn(async move {
                for i in keys.skip(t).step_by(tasks) {
                    let ttl = Duration::from_secs(3600);
                    cache
                        .put(&format!("f{i}"), &*value, deps_of(i), ttl)
                        .await
                        .expect("fill put");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("fill task");
    }
}

/// The dependency of entry `i` when `groups` invalidations share the entries.
pub fn group_dep(i: usize, groups: usize) -> Dep {
    dep::tag(&format!("fan{}", i % groups))
}

/// Waits until entry `f{probe}` is gone (the invalidation has taken its mark and started
/// dropping), then re-caches up to [`RECACHE_SAMPLE`] of the keys with dependency `of(i)`,
/// spread over the whole range, until `done` is set. Returns the keys re-cached before
/// `done` was set.
async fn recache_during(
    cache: MatroskaCache,
    n: usize,
    of: fn(usize) -> Vec<Dep>,
    done: Arc<AtomicBool>,
) -> Vec<usize> {
    let watched: Vec<usize> = (0..n).filter(|&i| watched(n, i)).collect();
    // The drop has begun once any watched entry is gone.
    'wait: loop {
        if done.load(Ordering::Acquire) {
            return Vec::new();
        }
        for &i in watched.iter().step_by(50) {
            if !cache.has(&format!("f{i}")).await.expect("has") {
                break 'wait;
            }
        }
        tokio::task::yield_now().await;
    }
    let mut recached = Vec::new();
    for i in watched {
        if done.load(Ordering::Acquire) {
            break;
        }
        let ttl = Duration::from_secs(3600);
        cache
            .put(&format!("f{i}"), "fresh", of(i), ttl)
            .await
            .expect("re-cache put");
        // Counted only if the invalidation was still running when the put returned.
        if !done.load(Ordering::Acquire) {
            recached.push(i);
        }
    }
    recached
}

/// Runs `groups` concurrent invalidations of `n / groups` dependents each, with a re-caching
/// task; returns the wall time and the keys re-cached meanwhile.
async fn invalidate_all(
    cache: &MatroskaCache,
    n: usize,
    groups: usize,
    of: fn(usize) -> Vec<Dep>,
) -> (Duration, Vec<usize>) {
    let done = Arc::new(AtomicBool::new(false));
    let recacher = tokio::spawn(recache_during(cache.clone(), n, of, Arc::clone(&done)));
    let start = Instant::now();
    let handles: Vec<_> = (0..groups)
        .map(|g| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .invalidate([dep::tag(&format!("fan{g}"))])
                    .await
                    .expect("fan-out invalidate")
            })
        })
        .collect();
    for h in handles {
        h.await.expect("invalidation task");
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Release);
    let recached = recacher.await.expect("re-cache task");
    (elapsed, recached)
}

/// How many of the re-cached keys still hold their new value.
async fn survivors(cache: &MatroskaCache, recached: &[usize]) -> usize {
    let mut survived = 0;
    for &i in recached {
        let value: Option<String> = cache.get(&format!("f{i}")).await.expect("get");
        if value.as_deref() == Some("fresh") {
            survived += 1;
        }
    }
    survived
}

/// Whether the re-caching task may have written `f{i}` (possibly after the invalidation
/// ended, so it is neither checked to survive nor to be gone).
fn watched(n: usize, i: usize) -> bool {
    i.is_multiple_of((n / RECACHE_SAMPLE).max(1))
}

/// Empties the server. ASYNC: a synchronous flush of a million keys outlasts the client's
/// timeout.
pub async fn flush(conn: &mut ConnectionManager) {
    let _: () = redis::cmd("FLUSHALL")
        .arg("ASYNC")
        .query_async(conn)
        .await
        .expect("FLUSHALL");
}

/// The baseline: the entries `f0..f{n}` of `prefix`, deleted blind with `UNLINK` in batches
/// of 1,000 (the keys known in advance), timed, with a `GET` loop watching the stall.
pub async fn unlink_measured(
    url: &str,
    prefix: &str,
    conn: &mut ConnectionManager,
    n: usize,
) -> (Duration, Probe) {
    let keys: Vec<String> = (0..n).map(|i| format!("{{{prefix}}}:d:f{i}")).collect();
    let running = probe(url);
    let start = Instant::now();
    for chunk in keys.chunks(UNLINK_BATCH) {
        let unlinked: usize = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(conn)
            .await
            .expect("UNLINK");
        assert_eq!(unlinked, chunk.len(), "the baseline deletes every entry");
    }
    (start.elapsed(), summary(running.finish()))
}

/// Redis: `cache` against `UNLINK` in batches through `raw`, for each size in `sizes`.
pub async fn redis(
    url: &str,
    prefix: &str,
    cache: &MatroskaCache,
    raw: &ConnectionManager,
    sizes: &[usize],
) -> Vec<FanOut> {
    let mut rows = Vec::new();
    let mut conn = raw.clone();
    for &n in sizes {
        flush(&mut conn).await;
        // The baseline: the same keys (our entries, filled the same way), deleted blind in
        // batches of 1,000 with the keys known in advance.
        fill(cache, 0..n, |i| vec![group_dep(i, 1)]).await;
        let (base, base_probe) = unlink_measured(url, prefix, &mut conn, n).await;
        flush(&mut conn).await;

        fill(cache, 0..n, |i| vec![group_dep(i, 1)]).await;
        let running = probe(url);
        let (ours, recached) = invalidate_all(cache, n, 1, |i| vec![group_dep(i, 1)]).await;
        let ours_probe = summary(running.finish());
        let survived = survivors(cache, &recached).await;
        // Every entry the re-caching task did not touch must be gone: count what is left by
        // scanning the entry keys (see the key layout in `backend/redis/keys.rs`).
        let left: Vec<String> = {
            let mut scan = conn
                .scan_match::<_, String>(format!("{{{prefix}}}:d:f*"))
                .await
                .expect("SCAN");
            let mut left = Vec::new();
            while let Some(key) = scan.next_item().await {
                left.push(key.expect("SCAN item"));
            }
            left
        };
        let leftover = left
            .iter()
            .filter_map(|k| k.rsplit_once(":f").and_then(|(_, i)| i.parse().ok()))
            .filter(|&i: &usize| !watched(n, i))
            .count();
        eprintln!("redis fan-out of {n}: {ours:.2?} (UNLINK {base:.2?})");
        rows.push(FanOut {
            backend: "redis",
            dependents: n,
            threads: 1,
            ours,
            baseline: "UNLINK same keys x1000",
            base,
            probe: Some((ours_probe, base_probe)),
            recached: recached.len(),
            survived,
            leftover,
        });
    }
    rows
}

/// Memory: our memory backend against moka's `invalidate` per key, with `threads`
/// concurrent invalidations sharing the `n` entries.
pub async fn memory(sizes: &[usize], threads: &[usize]) -> Vec<FanOut> {
    let mut rows = Vec::new();
    for &n in sizes {
        for &t in threads {
            let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(2 * n as u64);
            let value = Arc::<[u8]>::from("v".repeat(VALUE_LEN).as_bytes());
            let keys: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("f{i}")).collect());
            for k in keys.iter() {
                moka.insert(k.clone(), Arc::clone(&value));
            }
            let start = Instant::now();
            std::thread::scope(|s| {
                for g in 0..t {
                    let (moka, keys) = (moka.clone(), Arc::clone(&keys));
                    s.spawn(move || {
                        for k in keys.iter().skip(g).step_by(t) {
                            moka.invalidate(k);
                        }
                    });
                }
            });
            let base = start.elapsed();
            drop(moka);

            let cache = MatroskaCache::new(
                MemoryBackend::builder()
                    .max_entries(2 * n as u64)
                    .build()
                    .expect("memory backend"),
            );
            let of: fn(usize) -> Vec<Dep> = match t {
                1 => |i| vec![group_dep(i, 1)],
                _ => |i| vec![group_dep(i, 2)],
            };
            fill(&cache, 0..n, of).await;
            let (ours, recached) = invalidate_all(&cache, n, t, of).await;
            let survived = survivors(&cache, &recached).await;
            let mut leftover = 0;
            for i in (0..n).filter(|&i| !watched(n, i)) {
                if cache.has(&format!("f{i}")).await.expect("has") {
                    leftover += 1;
                }
            }
            eprintln!("memory fan-out of {n} on {t} threads: {ours:.2?} (moka {base:.2?})");
            rows.push(FanOut {
                backend: "memory",
                dependents: n,
                threads: t,
                ours,
                baseline: "moka invalidate",
                base,
                probe: None,
                recached: recached.len(),
                survived,
                leftover,
            });
        }
    }
    rows
}

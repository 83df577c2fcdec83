//! Reads while invalidations wait for a replica that hangs: `get` latency on a local cluster
//! (3 masters, 3 replicas) while a cache with `require_replicas(1, 200 ms)` invalidates in a
//! loop and one replica is paused (`SIGSTOP`), next to the same reads with no invalidation
//! running, in one run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, MatroskaCache, RedisBackend};
use matroska_test_support::RedisCluster;

const ENTRIES: u64 = 1_000;
const READERS: u64 = 4;

/// Latencies of one phase.
struct Phase {
    name: &'static str,
    gets: Vec<Duration>,
    invalidations: u64,
    replication_errors: u64,
}

pub async fn section() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let cache = MatroskaCache::new(
        RedisBackend::cluster_builder(cluster.urls(), "waits")
            .require_replicas(1, Duration::from_millis(200))
            .auto_prune(None)
            .build()
            .await
            .expect("cluster backend"),
    );
    for i in 0..ENTRIES {
        let deps = [dep::tag(&format!("t{}", i % 10))];
        cache
            .put(&format!("k{i}"), &i, deps, Duration::from_secs(600))
            .await
            .expect("put");
    }
    // Let the first directory repair (a fresh cluster's) finish before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = phase(&cache, "no invalidation", false).await;
    let replica = cluster.replica();
    cluster.pause(replica);
    let busy = phase(&cache, "invalidations waiting, a replica paused", true).await;
    cluster.resume(replica);
    println!("| reads during | gets | p50 | p99 | max | invalidations (Error::Replication) |");
    println!("|---|---|---|---|---|---|");
    for p in [idle, busy] {
        let mut gets = p.gets;
        gets.sort();
        let at = |q: f64| gets[((gets.len() - 1) as f64 * q) as usize];
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} ({}) |",
            p.name,
            gets.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            gets[gets.len() - 1].as_secs_f64() * 1e3,
            p.invalidations,
            p.replication_errors,
        );
    }
}

/// `READERS` tasks `get` random keys for 5 s, while (with `invalidating`) another task
/// invalidates one of the ten tags after another.
async fn phase(cache: &MatroskaCache, name: &'static str, invalidating: bool) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let (invalidations, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let invalidator = invalidating.then(|| {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        let (invalidations, errors) = (Arc::clone(&invalidations), Arc::clone(&errors));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tag = dep::tag(&format!("t{}", n % 10));
                if let Err(matroska_cache::Error::Replication { .. }) =
                    cache.invalidate([tag]).await
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                invalidations.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    });
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (cache, stop) = (cache.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut gets = Vec::new();
                let mut n = r;
                while !stop.load(Ordering::Relaxed) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let key = format!("k{}", (n >> 33) % ENTRIES);
                    let began = Instant::now();
                    let _ = cache.get::<u64>(&key).await;
                    gets.push(began.elapsed());
                }
                gets
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut gets = Vec::new();
    for reader in readers {
        gets.extend(reader.await.expect("reader"));
    }
    if let Some(task) = invalidator {
        task.await.expect("invalidator");
    }
    Phase {
        name,
        gets,
        invalidations: invalidations.load(Ordering::Relaxed),
        replication_errors: errors.load(Ordering::Relaxed),
    }
}

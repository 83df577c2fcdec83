//! Directory repair after a failover, on a local cluster (3 masters, 3 replicas) holding
//! many entries: the time from `kill -9` of a master until every shard's directories are
//! complete again (`RedisBackend::repair_pending() == 0`), and `invalidate` latency
//! meanwhile (an invalidation of a dependency homed on a shard under repair visits every
//! shard) next to the same invalidations once the repair is over, in one run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use matroska_cache::{dep, MatroskaCache, RedisBackend};
use matroska_test_support::RedisCluster;

/// Entries depend on one of this many tags.
const TAGS: u64 = 1_000;

pub async fn section(entries: u64) {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let backend = RedisBackend::cluster_builder(cluster.urls(), "repair")
        .auto_prune(None)
        .build()
        .await
        .expect("cluster backend");
    let cache = MatroskaCache::new(backend.clone());
    let began = Instant::now();
    let done = AtomicU64::new(0);
    futures_util::stream::iter(0..entries)
        .for_each_concurrent(64, |i| {
            let (cache, done) = (&cache, &done);
            async move {
                let deps = [dep::tag(&format!("t{}", i % TAGS))];
                cache
                    .put(&format!("k{i}"), &i, deps, Duration::from_secs(3600))
                    .await
                    .expect("put");
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100_000 == 0 {
                    eprintln!("  {n} entries ({:.0} s)", began.elapsed().as_secs_f64());
                }
            }
        })
        .await;
    while backend.repair_pending().await.expect("repair_pending") > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Invalidations of dependencies without dependents, homed anywhere, in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<(Instant, Duration)>::new()));
    let prober = {
        let (cache, stop, latencies) = (cache.clone(), Arc::clone(&stop), Arc::clone(&latencies));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let start = Instant::now();
                if cache
                    .invalidate([dep::tag(&format!("probe{n}"))])
                    .await
                    .is_ok()
                {
                    latencies.lock().unwrap().push((start, start.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let victim = cluster.masters()[1].port;
    let killed = Instant::now();
    let failover =
        tokio::task::block_in_place(|| cluster.fail_over(victim, Duration::from_secs(60)));
    // The repair begins at the first request that handshakes the promoted master.
    let mut seen_pending = false;
    let complete = loop {
        match backend.repair_pending().await {
            Ok(0) if seen_pending => break killed.elapsed(),
            Ok(0) => {}
            Ok(_) => seen_pending = true,
            Err(_) => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(600),
            "no repair within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let repaired_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    prober.await.expect("prober");
    let latencies = latencies.lock().unwrap().clone();
    let stats = |during: bool| {
        let mut l: Vec<Duration> = latencies
            .iter()
            .filter(|(at, _)| {
                if during {
                    *at >= killed + failover && *at < repaired_at
                } else {
                    *at >= repaired_at
                }
            })
            .map(|(_, d)| *d)
            .collect();
        l.sort();
        if l.is_empty() {
            return "no invalidation".to_owned();
        }
        let at = |q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        format!(
            "{} invalidations, p50 {:.2} ms, p99 {:.2} ms",
            l.len(),
            at(0.5),
            at(0.99)
        )
    };
    println!("| entries | failover | directories complete after `kill -9` | invalidate during the repair | after it |");
    println!("|---|---|---|---|---|");
    println!(
        "| {entries} | {:.1} s | {:.1} s | {} | {} |",
        failover.as_secs_f64(),
        complete.as_secs_f64(),
        stats(true),
        stats(false),
    );
}

//! On a local Redis Cluster (3 masters, 3 replicas): a fan-out invalidation against `UNLINK`
//! of the same keys, and memory per entry against a bare `SET`, both through redis-rs's
//! cluster connection. (The single operations are in `ops.rs`.)

use std::time::{Duration, Instant};

use matroska_cache::{dep, MatroskaCache};
use matroska_test_support::RedisCluster;
use redis::cluster_async::ClusterConnection;

use crate::fanout::{self, FanOut};
use crate::memory_use::MemoryUse;
use crate::ops::{deps, VALUE_LEN};

/// Entries for the memory measurement.
const ENTRIES: usize = 100_000;

/// A synchronous connection to each master.
fn masters(cluster: &RedisCluster) -> Vec<redis::Connection> {
    cluster
        .masters()
        .iter()
        .map(|m| cluster.node(m.port).connection())
        .collect()
}

/// Empties every master (in the background: a synchronous flush of many keys is slow).
fn flush(cluster: &RedisCluster) {
    for mut conn in masters(cluster) {
        let _: () = redis::cmd("FLUSHALL")
            .arg("ASYNC")
            .query(&mut conn)
            .expect("FLUSHALL");
    }
}

/// Every key matching `pattern` on every master, by master.
fn keys_by_master(cluster: &RedisCluster, pattern: &str) -> Vec<Vec<String>> {
    masters(cluster)
        .into_iter()
        .map(|mut conn| {
            let iter: redis::Iter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(&mut conn)
                .expect("SCAN");
            iter.map(|k| k.expect("SCAN item")).collect()
        })
        .collect()
}

/// The hash tag of `key` (`{...}`), which decides its slot.
fn tag(key: &str) -> &str {
    let end = key.find('}').map_or(key.len(), |i| i + 1);
    &key[..end]
}

/// One invalidation of a dependency with `n` dependents spread over the default 128 shards,
/// against `UNLINK` of the very same entry keys (known in advance, grouped by slot in
/// batches of up to 1,000, one task per master, all masters at once).
pub async fn fanout(
    cluster: &RedisCluster,
    cache: &MatroskaCache,
    raw: &ClusterConnection,
    prefix: &str,
    n: usize,
) -> FanOut {
    let pattern = format!("{{{prefix}#*}}:d:f*");
    flush(cluster);
    fanout::fill(cache, 0..n, |i| vec![fanout::group_dep(i, 1)]).await;
    let by_master = tokio::task::block_in_place(|| keys_by_master(cluster, &pattern));
    assert_eq!(by_master.iter().map(Vec::len).sum::<usize>(), n);
    let start = Instant::now();
    let tasks = by_master.into_iter().map(|mut keys| {
        let mut conn = raw.clone();
        async move {
            keys.sort_unstable_by(|a, b| tag(a).cmp(tag(b)));
            let mut unlinked = 0;
            for group in keys.chunk_by(|a, b| tag(a) == tag(b)) {
                for batch in group.chunks(1000) {
                    let count: usize = redis::cmd("UNLINK")
                        .arg(batch)
                        .query_async(&mut conn)
                        .await
                        .expect("UNLINK");
                    unlinked += count;
                }
            }
            unlinked
        }
    });
    let unlinked: usize = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .sum();
    let base = start.elapsed();
    assert_eq!(unlinked, n, "the baseline deletes every entry");

    flush(cluster);
    fanout::fill(cache, 0..n, |i| vec![fanout::group_dep(i, 1)]).await;
    let start = Instant::now();
    let dropped = cache
        .invalidate([dep::tag("fan0")])
        .await
        .expect("fan-out invalidate");
    let ours = start.elapsed();
    let left = tokio::task::block_in_place(|| keys_by_master(cluster, &pattern));
    eprintln!("cluster fan-out of {n}: {ours:.2?} (UNLINK {base:.2?})");
    FanOut {
        backend: "cluster",
        dependents: n,
        threads: 1,
        ours,
        baseline: "UNLINK same keys x1000 per slot",
        base,
        probe: None,
        recached: 0,
        survived: 0,
        leftover: left.iter().map(Vec::len).sum::<usize>() + n - dropped as usize,
    }
}

fn used_memory(cluster: &RedisCluster) -> f64 {
    masters(cluster)
        .into_iter()
        .map(|mut conn| {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query(&mut conn)
                .expect("INFO");
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("used_memory in INFO")
        })
        .sum()
}

/// `used_memory` growth over every master: [`ENTRIES`] puts of a 300-byte value with 3
/// dependencies, against as many bare `SET PX` of the same value.
pub async fn memory(
    cluster: &RedisCluster,
    cache: &MatroskaCache,
    raw: &ClusterConnection,
) -> MemoryUse {
    let value = "v".repeat(VALUE_LEN);
    flush(cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tokio::task::block_in_place(|| used_memory(cluster));
    for start in (0..ENTRIES).step_by(100) {
        let sets = (start..start + 100).map(|i| {
            let (mut conn, value) = (raw.clone(), &value);
            async move {
                let _: () = redis::cmd("SET")
                    .arg(format!("raw:k{i}"))
                    .arg(value)
                    .arg("PX")
                    .arg(3_600_000)
                    .query_async(&mut conn)
                    .await
                    .expect("SET");
            }
        });
        futures_util::future::join_all(sets).await;
    }
    let base = (tokio::task::block_in_place(|| used_memory(cluster)) - before) / ENTRIES as f64;

    let before = tokio::task::block_in_place(|| used_memory(cluster));
    let tasks = 32;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (cache, value) = (cache.clone(), value.clone());
            tokio::spawn(async move {
                for i in (t..ENTRIES).step_by(tasks) {
                    cache
                        .put(&format!("k{i}"), &value, deps(i), Duration::from_secs(3600))
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("put task");
    }
    let ours = (tokio::task::block_in_place(|| used_memory(cluster)) - before) / ENTRIES as f64;
    MemoryUse { ours, base }
}

//! A cache on a Redis Cluster (the behavioural suite also runs there: see `support`): how it
//! spreads, and what the cluster-specific parts do.

mod support;

use std::time::Duration;

use matroska_cache::{dep, MatroskaCache};
use matroska_test_support::RedisCluster;

const TTL: Duration = Duration::from_secs(600);

/// `MatroskaCache::redis_cluster` with the default shards: each of 3 masters holds a fair
/// share of one cache's entries and index keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cache_spreads_over_every_master() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let cache = MatroskaCache::redis_cluster(cluster.urls(), &prefix)
        .await
        .unwrap();
    const ENTRIES: u64 = 3_000;
    for i in 0..ENTRIES {
        let deps = [
            dep::id("article", i),
            dep::id("author", i % 50),
            dep::tag("home"),
        ];
        cache
            .put(&format!("article:{i}:html"), "<p>x</p>", deps, TTL)
            .await
            .unwrap();
    }
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut shares = Vec::new();
    for master in &masters {
        let mut conn = cluster.node(master.port).connection();
        let entries: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{{{prefix}#*}}:d:*"))
            .query(&mut conn)
            .unwrap();
        shares.push(entries.len() as u64);
    }
    assert_eq!(shares.iter().sum::<u64>(), ENTRIES);
    for share in &shares {
        // A third each, give or take: 128 shards over 3 slot ranges.
        assert!(
            *share > ENTRIES / 4 && *share < ENTRIES * 5 / 12,
            "entries per master: {shares:?}"
        );
    }
    // One invalidation reaches every shard that holds dependents, on every master.
    assert_eq!(cache.invalidate([dep::tag("home")]).await.unwrap(), ENTRIES);
    assert_eq!(cache.get::<String>("article:1:html").await.unwrap(), None);
    // Issue 20, item 4, on the cluster: cache keys that the index pattern `{p#*}:r:*`
    // matches (an HTTP layer's key for `GET /posts?q=}:r:x`, one per shard at random) stop
    // no prune pass; before, every pass failed with WRONGTYPE.
    for i in 0..64 {
        let key = format!("http:-:/posts?q=}}:r:{i}");
        cache
            .put(&key, "<p>q</p>", [dep::tag("q")], TTL)
            .await
            .unwrap();
    }
    let report = cache.prune().await.unwrap();
    assert_eq!(report.unreadable, 0, "{report:?}");
    assert_eq!(cache.invalidate([dep::tag("q")]).await.unwrap(), 64);
}

/// A shard whose master fails over starts a new epoch: what the promoted replica holds reads
/// as misses, tickets from before are refused there, and its directories are repaired so
/// that invalidations again reach every dependent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_starts_new_epochs_and_repairs_directories() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let build = || {
        matroska_cache::RedisBackend::cluster_builder(cluster.urls(), &prefix)
            .shards(16)
            .timeout(Duration::from_millis(500))
            .build()
    };
    let cache = MatroskaCache::new(build().await.unwrap());
    for i in 0..300u64 {
        cache
            .put(&format!("k{i}"), &i, [dep::id("item", i % 30)], TTL)
            .await
            .unwrap();
    }
    let ticket = cache.ticket().await.unwrap();
    // Let replicas catch up, then fail the first master over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let victim = cluster.masters()[0].port;
    tokio::task::block_in_place(|| cluster.fail_over(victim, Duration::from_secs(60)));

    // Until it reconnects, a request to the dead master fails; then it routes to the new one.
    let mut visible = 0;
    for i in 0..300u64 {
        let found = loop {
            match cache.get::<u64>(&format!("k{i}")).await {
                Ok(found) => break found,
                Err(error) => assert!(error.is_transient(), "{error}"),
            }
        };
        visible += u64::from(found.is_some());
    }
    // The promoted replica's shards read as misses (a cold shard), the others as before.
    assert!(
        visible < 300 && visible > 100,
        "{visible} of 300 still visible"
    );
    // A ticket from before the failover is refused in the shards that moved.
    let mut refused = 0;
    for i in 0..300u64 {
        let stored = cache
            .put_fenced(&format!("f{i}"), &i, [dep::id("other", i)], TTL, &ticket)
            .await
            .unwrap();
        refused += u64::from(!stored);
    }
    assert!(refused > 0 && refused < 300, "{refused} of 300 refused");
    // Every entry still visible goes with its dependency: directories homed on the promoted
    // replica are repaired (or invalidations visit every shard until they are).
    let mut dropped = 0;
    for item in 0..30u64 {
        dropped += cache.invalidate([dep::id("item", item)]).await.unwrap();
    }
    assert!(
        dropped >= visible,
        "{dropped} dropped, {visible} were visible"
    );
    for i in 0..300u64 {
        assert_eq!(
            cache.get::<u64>(&format!("k{i}")).await.unwrap(),
            None,
            "k{i}"
        );
    }
}

/// `require_replicas`: with a replica paused (`SIGSTOP`), an invalidation returns a typed
/// error, after it completed on the masters (nothing is silently lost); once the replica is
/// back, invalidations succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_is_a_typed_error_with_require_replicas() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let backend = matroska_cache::RedisBackend::cluster_builder(cluster.urls(), &prefix)
        .shards(16)
        .timeout(Duration::from_secs(2))
        .require_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let cache = MatroskaCache::new(backend);
    let put_all = || async {
        for i in 0..100u64 {
            cache
                .put(&format!("k{i}"), &i, [dep::tag("all")], TTL)
                .await
                .unwrap();
        }
    };
    put_all().await;
    assert_eq!(cache.invalidate([dep::tag("all")]).await.unwrap(), 100);

    put_all().await;
    let replica = cluster.replica();
    cluster.pause(replica);
    let outcome = cache.invalidate([dep::tag("all")]).await;
    cluster.resume(replica);
    match outcome {
        Err(matroska_cache::Error::Replication {
            wanted: 1,
            acknowledged: 0,
        }) => {}
        other => panic!("expected a replication error, got {other:?}"),
    }
    // The invalidation itself completed on the masters.
    for i in 0..100u64 {
        assert_eq!(cache.get::<u64>(&format!("k{i}")).await.unwrap(), None);
    }
    // Back to normal once the replica answers again (it may first resync).
    put_all().await;
    let mut outcome = cache.invalidate([dep::tag("all")]).await;
    for _ in 0..50 {
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        outcome = cache.invalidate([dep::tag("all")]).await;
    }
    outcome.unwrap();
    assert_eq!(cache.get::<u64>("k1").await.unwrap(), None);

    // Refused settings are a clear error.
    let wrong = matroska_cache::RedisBackend::cluster_builder(cluster.urls(), &prefix)
        .timeout(Duration::from_millis(100))
        .require_replicas(1, Duration::from_millis(100))
        .build()
        .await;
    assert!(matches!(
        wrong,
        Err(matroska_cache::Error::InvalidConfig(_))
    ));
}

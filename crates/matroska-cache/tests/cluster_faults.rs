//! Issue 19: ways an invalidation that returned `Ok` could be missed or undone on a Redis
//! Cluster, each as a black-box run against a local cluster (3 masters, 3 replicas). Each
//! test checks the promise itself: after `invalidate` returned `Ok`, nothing that depended on
//! what it named is readable.

mod support;

use std::time::Duration;

use matroska_cache::{dep, Error, MatroskaCache, RedisBackend};
use matroska_test_support::RedisCluster;

const TTL: Duration = Duration::from_secs(3600);

/// `op` until it succeeds: a connection that broke under it fails the call (the caller
/// cannot tell whether it ran) and the next call reconnects. Transient errors only.
async fn until_ok<T, F: std::future::Future<Output = Result<T, Error>>>(
    mut op: impl FnMut() -> F,
) -> T {
    let mut attempts = 0;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) if error.is_transient() && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// Item 1: a plain `put` that returned `Err` because the connection to one master broke
/// must not leave an entry that no invalidation reaches. Each put has a fresh dependency,
/// and every master's client connections are killed before it, in turn, so that the put's
/// shard and its dependency's home are often on different masters, one of them cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_failed_leaves_nothing_unreachable() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let cache = MatroskaCache::new(
        RedisBackend::cluster_builder(cluster.urls(), &prefix)
            .timeout(Duration::from_secs(1))
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    let masters: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    let (mut failed, mut stale) = (0, Vec::new());
    for i in 0..150u32 {
        let port = masters[i as usize % masters.len()];
        tokio::task::block_in_place(|| cluster.kill_clients_on(port));
        let key = format!("item:{i}");
        let tag = dep::tag(&format!("fresh-{i}"));
        if cache.put(&key, &i, [tag.clone()], TTL).await.is_err() {
            failed += 1;
        }
        // Whatever the put returned, an invalidation that returns Ok leaves nothing behind.
        let dropped = until_ok(|| cache.invalidate([tag.clone()])).await;
        if until_ok(|| cache.get::<u32>(&key)).await.is_some() {
            stale.push((i, dropped));
        }
    }
    assert!(failed > 0, "no put failed: the connections were not cut");
    assert_eq!(
        stale,
        Vec::new(),
        "entries readable after their dependency's invalidation returned Ok (of {failed} failed puts)"
    );
}

/// Item 2: a second process (or the CLI) with another shard count on the same prefix is
/// refused at `build()`, naming both counts; it never prunes or repairs the directories of
/// the prefix's layout in its own numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_shard_count_on_the_prefix_is_refused() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let builder = |shards: u16| {
        RedisBackend::cluster_builder(cluster.urls(), &prefix)
            .shards(shards)
            .auto_prune(None)
    };
    let cache = MatroskaCache::new(builder(64).build().await.unwrap());
    for i in 0..600u64 {
        let deps = [dep::tag(&format!("t{}", i % 60))];
        cache.put(&format!("k{i}"), &i, deps, TTL).await.unwrap();
    }
    for shards in [128, 16, 1] {
        match builder(shards).build().await {
            Ok(other) => {
                // What today's main did: the other layout prunes in its own numbering.
                MatroskaCache::new(other).prune().await.unwrap();
            }
            Err(error) => {
                assert!(matches!(error, Error::InvalidConfig(_)), "{error}");
                let text = error.to_string();
                assert!(
                    text.contains("64") && text.contains(&shards.to_string()),
                    "{text}"
                );
            }
        }
    }
    let mut dropped = 0;
    for t in 0..60 {
        dropped += cache
            .invalidate([dep::tag(&format!("t{t}"))])
            .await
            .unwrap();
    }
    let mut readable = 0;
    for i in 0..600u64 {
        if cache.get::<u64>(&format!("k{i}")).await.unwrap().is_some() {
            readable += 1;
        }
    }
    assert_eq!((dropped, readable), (600, 0));
    // The same count is welcome, and so is a builder that takes the prefix's count.
    builder(64).build().await.unwrap();
    let adopted = RedisBackend::cluster_builder(cluster.urls(), &prefix)
        .shards_of_prefix()
        .auto_prune(None)
        .build()
        .await
        .unwrap();
    assert_eq!(adopted.shards(), 64);
}

/// Item 3: an invalidation slowed past the "running" deadline (one master paused for writes,
/// `CLIENT PAUSE .. WRITE`, again and again) still counts as running everywhere it started
/// until it ends. Readers build pages from nested fragments while it runs: a page whose fragment
/// was read before the invalidation dropped it must not be stored where it outlives the `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_invalidation_runs_until_it_ends() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    // Running deadline: max(5 x 1 s, 1 s) = 5 s after the last sign of life.
    let deadline = Duration::from_secs(5);
    let cache = MatroskaCache::new(
        RedisBackend::cluster_builder(cluster.urls(), &prefix)
            .timeout(Duration::from_secs(1))
            .batch_size(20)
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    let d = dep::tag("d");
    const FRAGMENTS: u64 = 3000;
    for i in 0..FRAGMENTS {
        cache
            .put(&format!("fragment:{i}"), &1u64, [d.clone()], TTL)
            .await
            .unwrap();
    }
    // The database changes, then the invalidation runs; fragments computed now read 2.
    let version = Arc::new(AtomicU64::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let paused = cluster.masters()[0].port;
    let pauser = {
        let mut conn = cluster.node(paused).connection();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // A pause ends at the server's next cron tick after its timeout (every
                // 100 ms): UNPAUSE ends it at once, so that each gap is short.
                let _: () = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(5000)
                    .arg("WRITE")
                    .query(&mut conn)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(300));
                let _: () = redis::cmd("CLIENT")
                    .arg("UNPAUSE")
                    .query(&mut conn)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let invalidation = {
        let cache = cache.clone();
        let d = d.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let dropped = cache.invalidate([d]).await;
            (dropped, began.elapsed())
        })
    };
    let readers: Vec<_> = (0..8u64)
        .map(|r| {
            let (cache, version) = (cache.clone(), version.clone());
            let (stop, d) = (stop.clone(), d.clone());
            tokio::spawn(async move {
                let mut pages = Vec::new();
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    k += 1;
                    let page = format!("page:{r}:{k}");
                    let fragment = format!("fragment:{}", (k * 7919 + r * 31) % FRAGMENTS);
                    let seen = cache
                        .get_or_compute(&page, TTL, || async {
                            // A Russian doll: the page depends on whatever the fragment does.
                            let v: u64 = cache
                                .get_or_compute(&fragment, TTL, || async {
                                    Ok::<_, Error>((version.load(Ordering::SeqCst), [d.clone()]))
                                })
                                .await?;
                            Ok::<_, Error>((v, []))
                        })
                        .await;
                    if seen.is_ok() {
                        pages.push(page);
                    }
                }
                pages
            })
        })
        .collect();
    let (dropped, took) = invalidation.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    pauser.join().unwrap();
    let dropped = dropped.unwrap();
    assert!(
        took > deadline * 3 / 2,
        "the invalidation took {took:?}: not slowed past its running deadline, the test shows nothing"
    );
    assert!(dropped >= FRAGMENTS, "{dropped}");
    let mut stale = Vec::new();
    let mut read = 0;
    for reader in readers {
        for page in reader.await.unwrap() {
            read += 1;
            if until_ok(|| cache.get::<u64>(&page)).await == Some(1) {
                stale.push(page);
            }
        }
    }
    assert_eq!(
        stale,
        Vec::<String>::new(),
        "pages built from a fragment the invalidation dropped, readable after its Ok ({took:?}, {read} pages)"
    );
    assert!(read > 100, "only {read} pages were read");
}

/// Item 6: on full `noeviction` masters, invalidation still works, and so does a shard whose
/// master failed over to a full replica: the new epoch's handshake, its ticket floor and the
/// directory repair only grow fixed-size bookkeeping keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_works_on_full_masters_and_after_their_failover() {
    let mut cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_with(&[("maxmemory", "12mb"), ("maxmemory-policy", "noeviction")])
    });
    let urls = cluster.urls();
    let build = |prefix: String| {
        RedisBackend::cluster_builder(urls.clone(), &prefix)
            .shards(16)
            .auto_prune(None)
            .build()
    };
    let cache = MatroskaCache::new(build(support::unique_prefix()).await.unwrap());
    let stored = fill(&cache, "k").await;
    // Every master is full: the invalidation takes its marks, drops, and ends all the same.
    let dropped = cache.invalidate([dep::tag("t0")]).await.unwrap();
    assert!(dropped > 0);
    // One master fails over; another cache fills every master again, the promoted one too,
    // before this cache's first request there handshakes its shards' new epochs.
    let victim = cluster.masters()[1].port;
    tokio::task::block_in_place(|| cluster.fail_over(victim, Duration::from_secs(30)));
    let other = MatroskaCache::new(build(support::unique_prefix()).await.unwrap());
    fill(&other, "o").await;
    for key in &stored {
        until_ok(|| cache.get::<String>(key)).await;
    }
    let dropped = until_ok(|| cache.invalidate([dep::tag("all")])).await;
    assert!(dropped > 0);
    for key in &stored {
        assert_eq!(cache.get::<String>(key).await.unwrap(), None, "{key}");
    }
}

/// Issue 21: a master that hangs (`SIGSTOP`: no reset, nothing answers) is routed around
/// once its replica is promoted, with the breaker on (the default): every operation on every
/// shard works again, the old master still paused. The paused master serves slot 0, so it
/// holds shard 0 and the ticket counter every invalidation and read-through needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_master_is_routed_around_once_its_replica_is_promoted() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let prefix = support::unique_prefix();
    let cache = MatroskaCache::new(
        RedisBackend::cluster_builder(cluster.urls(), &prefix)
            .build()
            .await
            .unwrap(),
    );
    let keys: Vec<String> = (0..24).map(|i| format!("page:{i}")).collect();
    for key in &keys {
        cache.put(key, "v", [dep::tag("all")], TTL).await.unwrap();
    }
    let victim = cluster.master_of_slot(0);
    // Traffic while it hangs opens its breaker.
    let hanging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hammers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, keys, hanging) = (cache.clone(), keys.clone(), hanging.clone());
            tokio::spawn(async move {
                while hanging.load(std::sync::atomic::Ordering::SeqCst) {
                    for key in &keys {
                        let _ = cache.get::<String>(key).await;
                    }
                }
            })
        })
        .collect();
    let failed_over = tokio::task::block_in_place(|| {
        cluster.pause_until_failed_over(victim, Duration::from_secs(60))
    });
    let promoted = std::time::Instant::now();
    hanging.store(false, std::sync::atomic::Ordering::SeqCst);
    for hammer in hammers {
        hammer.await.unwrap();
    }
    assert!(cache.stats().breaker_openings > 0, "{:?}", cache.stats());
    // One round of every operation on every shard, until a round succeeds whole.
    let mut rounds = 0;
    let recovered = loop {
        rounds += 1;
        let round = async {
            for (i, key) in keys.iter().enumerate() {
                cache.get::<String>(key).await?;
                cache
                    .put(key, "w", [dep::tag("all"), dep::id("page", i)], TTL)
                    .await?;
            }
            let computed: String = cache
                .get_or_compute("computed", TTL, || async {
                    Ok::<_, Error>(("c".to_owned(), [dep::tag("all")]))
                })
                .await?;
            assert_eq!(computed, "c");
            cache.invalidate([dep::tag("all")]).await
        };
        match round.await {
            Ok(dropped) => {
                assert!(dropped >= keys.len() as u64, "{dropped}");
                break promoted.elapsed();
            }
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(
                    promoted.elapsed() < Duration::from_secs(60),
                    "still failing a minute after the promotion: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!(
        "failed over {failed_over:?} after the pause; every operation works {recovered:?} after the promotion ({rounds} rounds)"
    );
    for key in &keys {
        assert_eq!(cache.get::<String>(key).await.unwrap(), None, "{key}");
    }
    cluster.resume(victim);
}

/// Puts 16 KiB pages until 100 puts in a row failed with OOM (their keys spread over every
/// shard: every master is full); the keys stored.
async fn fill(cache: &MatroskaCache, name: &str) -> Vec<String> {
    let page = "x".repeat(16 * 1024);
    let (mut stored, mut refused) = (Vec::new(), 0);
    for i in 0u32.. {
        let key = format!("{name}{i}");
        let deps = [dep::tag(&format!("t{}", i % 20)), dep::tag("all")];
        match cache.put(&key, &page, deps, TTL).await {
            Ok(()) => {
                stored.push(key);
                refused = 0;
            }
            Err(error) => {
                assert!(error.to_string().contains("OOM"), "{error}");
                refused += 1;
                if refused == 100 {
                    return stored;
                }
            }
        }
        assert!(i < 20_000, "the masters never filled up");
    }
    unreachable!()
}

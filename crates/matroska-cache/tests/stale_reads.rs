//! The read-through history check: readers compute from a versioned store through
//! `get_or_compute` while writers bump versions and invalidate. A read is *stale* if it returns
//! a version older than one whose invalidation had completed before the read began. There must
//! be none, over 200,000 reads, and most reads must be hits; then again with faults: Redis
//! killed and restarted, client connections killed, callers' futures dropped mid-operation.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska_cache::{dep, Error, MatroskaCache};
use matroska_test_support::RedisCluster;
use rand::{Rng, SeedableRng};
use support::{Harness, Kind};

const ITEMS: usize = 24;
const READERS: u64 = 8;
const WRITERS: u64 = 2;
const READS: u64 = 200_000;
/// Invalidations the run needs at least, so that it tests something whatever the speed.
const INVALIDATIONS: u64 = 1_000;
const TTL: Duration = Duration::from_secs(60);

/// The source of truth: a version per item, and the highest version of each whose
/// invalidation has completed.
struct Store {
    versions: Vec<AtomicU64>,
    completed: Vec<AtomicU64>,
}

impl Tally {
    fn done(&self) -> bool {
        self.reads.load(Ordering::Relaxed) >= READS
            && self.invalidations.load(Ordering::Relaxed) >= INVALIDATIONS
            && !self.faults_pending.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    stale: AtomicU64,
    /// Reads whose computation failed with no fallback (entry options only).
    failed_reads: AtomicU64,
    /// Times Redis was paused.
    pauses: AtomicU64,
    cancelled: AtomicU64,
    invalidations: AtomicU64,
    failed_invalidations: AtomicU64,
    /// Failed attempts that were `Error::Replication` (too few replicas acknowledged).
    replication_errors: AtomicU64,
    /// Invalidations completed by the writer with `require_replicas`.
    replicated_invalidations: AtomicU64,
    /// Set while faults are still to come: the run goes on until they happened.
    faults_pending: AtomicBool,
}

#[derive(Clone, Copy, Default)]
struct Chaos {
    cancel: bool,
    client_kill: bool,
    restart: bool,
    /// Reads of items and groups use entry options: a 40 ms TTL, a fail-safe window and
    /// refresh-ahead; one computation in five fails (the database is flaky).
    entry_options: bool,
    /// Redis is paused (`SIGSTOP`) for 1.5 s every 4 s.
    pause: bool,
}

/// The lifetime of entries read with entry options.
const SHORT_TTL: Duration = Duration::from_millis(40);

/// Reads one item "from the database", taking up to 2 ms.
async fn query(store: &Store, item: usize, rng_seed: u64) -> u64 {
    let micros = rand::rngs::StdRng::seed_from_u64(rng_seed).random_range(0..2_000);
    tokio::time::sleep(Duration::from_micros(micros)).await;
    store.versions[item].load(Ordering::SeqCst)
}

/// [`query`] that fails one time in five.
async fn flaky_query(store: &Store, item: usize, seed: u64) -> Result<u64, ()> {
    let version = query(store, item, seed).await;
    if rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed).random_bool(0.2) {
        return Err(());
    }
    Ok(version)
}

/// A read with entry options: an item or a group list, each with a fail-safe window and
/// refresh-ahead, computed from a flaky database. `None` if computing failed without a
/// fallback.
async fn read_with_options(
    cache: &MatroskaCache,
    store: &Arc<Store>,
    kind: u32,
    n: usize,
    seed: u64,
) -> Option<Vec<(usize, u64)>> {
    let items = match kind {
        0 => vec![n],
        _ => vec![n, (n + 1) % ITEMS, (n + 2) % ITEMS],
    };
    let store = Arc::clone(store);
    let key = format!("options:{kind}:{n}");
    cache
        .entry(&key)
        .ttl(SHORT_TTL)
        .fail_safe(Duration::from_secs(10))
        .refresh_after(SHORT_TTL / 2)
        .get_or_compute(move || async move {
            let mut seen = vec![];
            for (k, &i) in items.iter().enumerate() {
                seen.push((i, flaky_query(&store, i, seed + k as u64).await?));
            }
            let deps: Vec<_> = items.iter().map(|&i| dep::id("item", i)).collect();
            Ok::<_, ()>((seen, deps))
        })
        .await
        .ok()
}

/// One read: an item, a group list (explicit deps) or a page built from nested item reads
/// (dependencies propagated automatically). Returns the (item, version) pairs it saw.
async fn read(
    cache: &MatroskaCache,
    store: &Store,
    kind: u32,
    n: usize,
    seed: u64,
) -> Vec<(usize, u64)> {
    match kind {
        0 => {
            let v = cache
                .get_or_compute(&format!("item:{n}"), TTL, || async {
                    Ok::<_, ()>((query(store, n, seed).await, [dep::id("item", n)]))
                })
                .await
                .unwrap();
            vec![(n, v)]
        }
        1 => {
            let items = [n, (n + 1) % ITEMS, (n + 2) % ITEMS];
            cache
                .get_or_compute(&format!("group:{n}"), TTL, || async {
                    let mut seen = vec![];
                    for (k, &i) in items.iter().enumerate() {
                        seen.push((i, query(store, i, seed + k as u64).await));
                    }
                    Ok::<_, ()>((seen, items.map(|i| dep::id("item", i))))
                })
                .await
                .unwrap()
        }
        _ => {
            let items = [n, (n + 5) % ITEMS];
            cache
                .get_or_compute(&format!("page:{n}"), TTL, || async {
                    let mut seen = vec![];
                    for (k, &i) in items.iter().enumerate() {
                        // A Russian doll: the page depends on whatever the fragment does.
                        let v = cache
                            .get_or_compute(&format!("item:{i}"), TTL, || async {
                                Ok::<_, ()>((
                                    query(store, i, seed + k as u64).await,
                                    [dep::id("item", i)],
                                ))
                            })
                            .await?;
                        seen.push((i, v));
                    }
                    Ok::<_, ()>((seen, []))
                })
                .await
                .unwrap()
        }
    }
}

async fn reader(
    cache: MatroskaCache,
    store: Arc<Store>,
    tally: Arc<Tally>,
    seed: u64,
    chaos: Chaos,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !tally.done() {
        let kind = rng.random_range(0..3);
        let n = rng.random_range(0..ITEMS);
        // What had been invalidated before this read began.
        let floor: Vec<u64> = store
            .completed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        let seed = rng.random();
        let op = async {
            if chaos.entry_options && kind < 2 {
                read_with_options(&cache, &store, kind, n, seed).await
            } else {
                Some(read(&cache, &store, kind, n, seed).await)
            }
        };
        let seen = if chaos.cancel && rng.random_bool(0.02) {
            // Drop the caller's future at a random point.
            let limit = Duration::from_micros(rng.random_range(0..3_000));
            match tokio::time::timeout(limit, op).await {
                Ok(seen) => seen,
                Err(_) => {
                    tally.cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        } else {
            op.await
        };
        tally.reads.fetch_add(1, Ordering::Relaxed);
        // In-memory hits never wait: let the writers run.
        tokio::task::yield_now().await;
        let Some(seen) = seen else {
            // The flaky database failed and there was no fallback.
            tally.failed_reads.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for (item, version) in seen {
            if version < floor[item] {
                tally.stale.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Bumps versions and invalidates until the run is done (or `until` is set).
async fn writer(
    cache: MatroskaCache,
    store: Arc<Store>,
    tally: Arc<Tally>,
    seed: u64,
    until: Option<Arc<AtomicBool>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stopped = || until.as_ref().is_some_and(|u| u.load(Ordering::Relaxed));
    while !tally.done() && !stopped() {
        let item = rng.random_range(0..ITEMS);
        let version = store.versions[item].fetch_add(1, Ordering::SeqCst) + 1;
        // The write is committed; now invalidate, retrying until it succeeds (Redis may be
        // down): only a completed invalidation sets the floor.
        loop {
            match cache.invalidate([dep::id("item", item)]).await {
                Ok(_) => break,
                Err(error) => {
                    if matches!(error, Error::Replication { .. }) {
                        tally.replication_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.failed_invalidations.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        store.completed[item].fetch_max(version, Ordering::SeqCst);
        tally.invalidations.fetch_add(1, Ordering::Relaxed);
        if until.is_some() {
            tally
                .replicated_invalidations
                .fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..15))).await;
    }
}

async fn run(h: Harness, caches: Vec<MatroskaCache>, chaos: Chaos) {
    run_with(h, caches, chaos, None).await;
}

/// A cluster for [`cluster_chaos`], and a cache on it whose invalidations wait for a replica.
struct ClusterRun {
    cluster: RedisCluster,
    replicated: MatroskaCache,
}

/// What the cluster faults did, for the report.
#[derive(Debug, Default)]
struct ClusterFaults {
    killed_clients: u64,
    /// How long a replica was paused (`SIGSTOP`) while a writer with `require_replicas` ran.
    paused_replica: Option<Duration>,
    /// From the replica's resume until that writer's next invalidation succeeded.
    replication_recovery: Option<Duration>,
    resharded_slots: u16,
    /// From `kill -9` of a master until a replica served all its slots.
    failover: Option<Duration>,
    /// From `kill -9` until an invalidation succeeded again after the cluster was stable.
    recovery: Option<Duration>,
    /// From `SIGSTOP` of the master of slot 0 (shard 0's ticket counter is in the lowest
    /// slots: every invalidation and read-through miss needs it) until its replica served
    /// its slots.
    hung_master: Option<Duration>,
    /// From that `SIGSTOP` until an invalidation succeeded, the master still paused.
    hung_recovery: Option<Duration>,
    /// From the paused master's resume (it rejoined as a replica and resynced) until it was
    /// master again (`CLUSTER FAILOVER` on it: a failback).
    failback: Option<Duration>,
    /// From that resume until an invalidation succeeded after the failback.
    failback_recovery: Option<Duration>,
}

/// Waits until the writers complete another invalidation; how long that took, or `None` if
/// none did within `limit`.
async fn next_invalidation(
    tally: &Tally,
    since: std::time::Instant,
    limit: Duration,
) -> Option<Duration> {
    let before = tally.invalidations.load(Ordering::SeqCst);
    while tally.invalidations.load(Ordering::SeqCst) <= before {
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Some(since.elapsed())
}

/// Client connections killed every second; a replica paused (`SIGSTOP`) for 2 s while an
/// extra writer invalidates with `require_replicas` (`replicated` is set when that writer must
/// stop: before the failover leaves a master without a replica); 300 slots moved between
/// masters; then a master killed (`kill -9`) and failed over; then the master of shard 0
/// paused (`SIGSTOP`: no reset) until its replica took over, resumed as a replica, and made
/// master again (a failback); all while the readers and writers run.
async fn cluster_chaos(
    mut cluster: RedisCluster,
    done: Arc<AtomicBool>,
    tally: Arc<Tally>,
    replicated: Arc<AtomicBool>,
) -> (RedisCluster, ClusterFaults) {
    let mut faults = ClusterFaults::default();
    let mut tick = 0u64;
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tick += 1;
        let reads = tally.reads.load(Ordering::Relaxed);
        if tick.is_multiple_of(10) && reads < READS / 4 {
            faults.killed_clients += tokio::task::block_in_place(|| cluster.kill_clients());
        }
        if faults.paused_replica.is_none() && reads > READS / 8 {
            let replica = cluster.replica();
            let paused = std::time::Instant::now();
            cluster.pause(replica);
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.resume(replica);
            faults.paused_replica = Some(paused.elapsed());
            let resumed = std::time::Instant::now();
            let before = tally.replicated_invalidations.load(Ordering::SeqCst);
            while tally.replicated_invalidations.load(Ordering::SeqCst) <= before
                && !done.load(Ordering::Relaxed)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            faults.replication_recovery = Some(resumed.elapsed());
            replicated.store(true, Ordering::Relaxed);
        }
        if faults.resharded_slots == 0 && faults.paused_replica.is_some() && reads > READS / 4 {
            let masters = cluster.masters();
            tokio::task::block_in_place(|| cluster.reshard(masters[0].port, masters[1].port, 300));
            faults.resharded_slots = 300;
        }
        if faults.failover.is_none() && faults.resharded_slots > 0 && reads > READS / 2 {
            let victim = cluster.masters()[2].port;
            let killed = std::time::Instant::now();
            faults.failover = Some(tokio::task::block_in_place(|| {
                cluster.fail_over(victim, Duration::from_secs(60))
            }));
            let before = tally.invalidations.load(Ordering::SeqCst);
            while tally.invalidations.load(Ordering::SeqCst) <= before
                && !done.load(Ordering::Relaxed)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            faults.recovery = Some(killed.elapsed());
        }
        if faults.hung_master.is_none() && faults.recovery.is_some() && reads > READS * 5 / 8 {
            let victim = cluster.master_of_slot(0);
            let paused = std::time::Instant::now();
            faults.hung_master = Some(tokio::task::block_in_place(|| {
                cluster.pause_until_failed_over(victim, Duration::from_secs(60))
            }));
            // The caches route around the hung master, which never answers.
            faults.hung_recovery = next_invalidation(&tally, paused, Duration::from_secs(60)).await;
            cluster.resume(victim);
            let resumed = std::time::Instant::now();
            faults.failback = Some(tokio::task::block_in_place(|| {
                cluster.fail_back(victim, Duration::from_secs(60))
            }));
            faults.failback_recovery =
                next_invalidation(&tally, resumed, Duration::from_secs(60)).await;
            tally.faults_pending.store(false, Ordering::SeqCst);
        }
    }
    (cluster, faults)
}

async fn run_with(
    h: Harness,
    caches: Vec<MatroskaCache>,
    chaos: Chaos,
    cluster: Option<ClusterRun>,
) {
    let store = Arc::new(Store {
        versions: (0..ITEMS).map(|_| AtomicU64::new(0)).collect(),
        completed: (0..ITEMS).map(|_| AtomicU64::new(0)).collect(),
    });
    let tally = Arc::new(Tally::default());
    // A cluster run goes on until every fault happened.
    tally
        .faults_pending
        .store(cluster.is_some(), Ordering::SeqCst);
    let mut tasks = vec![];
    for r in 0..READERS {
        let cache = caches[r as usize % caches.len()].clone();
        tasks.push(tokio::spawn(reader(
            cache,
            Arc::clone(&store),
            Arc::clone(&tally),
            r,
            chaos,
        )));
    }
    for w in 0..WRITERS {
        let cache = caches[w as usize % caches.len()].clone();
        tasks.push(tokio::spawn(writer(
            cache,
            Arc::clone(&store),
            Arc::clone(&tally),
            1_000 + w,
            None,
        )));
    }
    let done = Arc::new(AtomicBool::new(false));
    let hits_before_restart = Arc::new(AtomicU64::new(0));
    let cluster_task = cluster.map(|run| {
        let replicated = Arc::new(AtomicBool::new(false));
        tasks.push(tokio::spawn(writer(
            run.replicated,
            Arc::clone(&store),
            Arc::clone(&tally),
            2_000,
            Some(Arc::clone(&replicated)),
        )));
        tokio::spawn(cluster_chaos(
            run.cluster,
            Arc::clone(&done),
            Arc::clone(&tally),
            replicated,
        ))
    });
    let chaos_task = match h.kind {
        Kind::Redis { mut server, .. } if chaos.restart || chaos.client_kill || chaos.pause => {
            let (done, tally) = (Arc::clone(&done), Arc::clone(&tally));
            let caches = caches.clone();
            let hits_before = Arc::clone(&hits_before_restart);
            Some(tokio::spawn(async move {
                let mut restarted = !chaos.restart;
                let mut tick = 0u64;
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tick += 1;
                    // The test server's helpers block: keep them off the async workers.
                    if chaos.client_kill && tick.is_multiple_of(10) {
                        tokio::task::block_in_place(|| {
                            let client = ::redis::Client::open(server.url());
                            if let Ok(mut conn) = client.and_then(|c| c.get_connection()) {
                                let _ = ::redis::cmd("CLIENT")
                                    .arg("KILL")
                                    .arg("TYPE")
                                    .arg("normal")
                                    .arg("SKIPME")
                                    .arg("yes")
                                    .query::<u64>(&mut conn);
                            }
                        });
                    }
                    // Hung for 1.5 s of every 4 s: timeouts, the breaker, turns on the
                    // fault path, failed invalidations retried.
                    if chaos.pause && tick % 40 == 10 {
                        server.pause();
                        tokio::time::sleep(Duration::from_millis(1_500)).await;
                        server.resume();
                        tally.pauses.fetch_add(1, Ordering::Relaxed);
                    }
                    if !restarted && tally.reads.load(Ordering::Relaxed) > READS / 3 {
                        tokio::task::block_in_place(|| server.kill());
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        tokio::task::block_in_place(|| server.restart());
                        restarted = true;
                        hits_before.store(
                            caches.iter().map(|c| c.stats().hits).sum(),
                            Ordering::SeqCst,
                        );
                    }
                }
                server
            }))
        }
        _ => None,
    };
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    if let Some(task) = chaos_task {
        drop(task.await.unwrap());
    }
    let cluster_faults = match cluster_task {
        Some(task) => {
            let (cluster, faults) = task.await.unwrap();
            // Every fault happened while the readers ran.
            assert!(
                faults.failover.is_some(),
                "the run ended before the failover: {faults:?}"
            );
            assert!(
                faults.hung_recovery.is_some() && faults.failback_recovery.is_some(),
                "no invalidation succeeded while a master hung, or after the failback: {faults:?}"
            );
            // The paused replica surfaced as typed errors, which the writer retried.
            assert!(
                tally.replication_errors.load(Ordering::Relaxed) > 0,
                "no Error::Replication while a replica was paused: {faults:?}"
            );
            drop(cluster);
            Some(faults)
        }
        None => None,
    };

    let stats: Vec<_> = caches.iter().map(MatroskaCache::stats).collect();
    let hits: u64 = stats.iter().map(|s| s.hits).sum();
    let computations: u64 = stats.iter().map(|s| s.computations).sum();
    let fenced: u64 = stats.iter().map(|s| s.fenced).sum();
    let faults: u64 = stats.iter().map(|s| s.faults).sum();
    let fail_safe_hits: u64 = stats.iter().map(|s| s.fail_safe_hits).sum();
    let refreshes: u64 = stats.iter().map(|s| s.refreshes).sum();
    let fast_failures: u64 = stats.iter().map(|s| s.fast_failures).sum();
    let reads = tally.reads.load(Ordering::Relaxed);
    let stale = tally.stale.load(Ordering::Relaxed);
    // The figures quoted in the closing note come from this line (run with --nocapture).
    println!(
        "stale-read check: {reads} reads, {stale} stale, {hits} hits, {computations} computations, \
         {fenced} fenced, {faults} faults, {} invalidations ({} failed attempts, {} of them \
         Error::Replication), {} cancelled, {fail_safe_hits} fail-safe hits, {refreshes} \
         refreshes, {} reads failed, {} pauses, {fast_failures} fast failures",
        tally.invalidations.load(Ordering::Relaxed),
        tally.failed_invalidations.load(Ordering::Relaxed),
        tally.replication_errors.load(Ordering::Relaxed),
        tally.cancelled.load(Ordering::Relaxed),
        tally.failed_reads.load(Ordering::Relaxed),
        tally.pauses.load(Ordering::Relaxed),
    );
    if chaos.entry_options {
        assert!(
            fail_safe_hits > 0 && refreshes > 0,
            "the entry options were never exercised"
        );
    }
    if chaos.pause {
        assert!(
            tally.pauses.load(Ordering::Relaxed) > 0 && fast_failures > 0,
            "Redis never hung long enough to open a breaker"
        );
    }
    if let Some(faults) = &cluster_faults {
        println!("cluster faults: {faults:?}");
    }
    assert!(reads >= READS);
    assert_eq!(stale, 0, "stale reads");
    assert!(tally.invalidations.load(Ordering::Relaxed) >= INVALIDATIONS);
    assert!(
        fenced > 0 || chaos.restart,
        "no computation ever overlapped an invalidation"
    );
    if cluster_faults.is_some() || chaos.pause {
        assert!(
            hits > reads / 4,
            "caching barely happened: {hits} hits for {reads} reads"
        );
    } else if chaos.restart {
        // Caching resumed after the restart.
        assert!(
            hits > hits_before_restart.load(Ordering::SeqCst) + 1_000,
            "no hits after the restart"
        );
        assert!(faults > 0, "the restart went unnoticed");
    } else {
        // Hits count nested lookups too; most top-level reads must be hits.
        assert!(
            hits > reads / 2,
            "caching barely happened: {hits} hits for {reads} reads"
        );
    }
}

async fn no_stale_reads(h: Harness) {
    let caches = vec![h.cache.clone(), h.other_client().await];
    run(h, caches, Chaos::default()).await;
}

async fn no_stale_reads_when_callers_are_cancelled(h: Harness) {
    let caches = vec![h.cache.clone(), h.other_client().await];
    run(
        h,
        caches,
        Chaos {
            cancel: true,
            ..Chaos::default()
        },
    )
    .await;
}

/// Entries with a 40 ms TTL, a fail-safe window and refresh-ahead, over a database that fails
/// one computation in five: expired values are served only when computing fails, never
/// after their invalidation; refreshes are fenced.
async fn no_stale_reads_with_fail_safe_and_refresh_ahead(h: Harness) {
    let caches = vec![h.cache.clone(), h.other_client().await];
    run(
        h,
        caches,
        Chaos {
            entry_options: true,
            cancel: true,
            ..Chaos::default()
        },
    )
    .await;
}

// On a cluster, the history check runs once, with faults and cancelled callers (below): each
// run takes minutes on a busy 2-core machine.
backend_tests!(
    without_cluster: no_stale_reads,
    no_stale_reads_when_callers_are_cancelled,
    no_stale_reads_with_fail_safe_and_refresh_ahead
);

/// Two clients of `h`'s Redis store for runs with faults: short timeouts, and a short lease
/// (a holder cancelled while a connection is being killed can leave its lease behind, and
/// waiters give up on it after half this long).
async fn caches_for_faults(h: &Harness) -> Vec<MatroskaCache> {
    let mut caches = vec![];
    for _ in 0..2 {
        let backend = h
            .redis_builder()
            .expect("a Redis store")
            .timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap();
        let cache = MatroskaCache::builder(backend).lease_timeout(Duration::from_secs(1));
        caches.push(cache.build().unwrap());
    }
    caches
}

/// Redis hung (`SIGSTOP`) again and again while readers use fail-safe and refresh-ahead
/// entries: breakers open, callers of a key take turns on the fault path, invalidations
/// fail and are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_while_redis_hangs() {
    let h = support::redis().await;
    let caches = caches_for_faults(&h).await;
    run(
        h,
        caches,
        Chaos {
            pause: true,
            entry_options: true,
            ..Chaos::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_through_redis_restarts_and_killed_connections() {
    let h = support::redis().await;
    let caches = caches_for_faults(&h).await;
    run(
        h,
        caches,
        Chaos {
            cancel: true,
            client_kill: true,
            restart: true,
            ..Chaos::default()
        },
    )
    .await;
}

/// The history check on a cluster while its client connections are killed, a replica is
/// paused under a writer with `require_replicas`, slots move between masters, a master is
/// killed and failed over, and another is paused (`SIGSTOP`) until it is failed over, then
/// resumed and failed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_through_cluster_failover_resharding_and_killed_connections() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let h = support::cluster(&cluster).await;
    let caches = caches_for_faults(&h).await;
    let replicated = h
        .redis_builder()
        .expect("a Redis store")
        .timeout(Duration::from_millis(500))
        .require_replicas(1, Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let replicated = MatroskaCache::builder(replicated)
        .lease_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    run_with(
        h,
        caches,
        Chaos {
            cancel: true,
            ..Chaos::default()
        },
        Some(ClusterRun {
            cluster,
            replicated,
        }),
    )
    .await;
}

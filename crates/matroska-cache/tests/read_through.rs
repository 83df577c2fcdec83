//! get_or_compute and fenced puts, on both backends.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska_cache::{dep, depends_on, Dep, MatroskaCache, RedisBackend};
use support::{Harness, Kind};

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
struct DbError(&'static str);

async fn misses_compute_and_hits_do_not(h: Harness) {
    let c = &h.cache;
    let runs = AtomicU32::new(0);
    let compute = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, DbError>((vec![1, 2], [dep::id("article", 1)]))
    };
    assert_eq!(c.get_or_compute("k", MINUTE, compute).await, Ok(vec![1, 2]));
    assert_eq!(c.get_or_compute("k", MINUTE, compute).await, Ok(vec![1, 2]));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.deps("k").await.unwrap(),
        Some(vec![dep::id("article", 1)])
    );
    c.invalidate([dep::id("article", 1)]).await.unwrap();
    assert_eq!(c.get_or_compute("k", MINUTE, compute).await, Ok(vec![1, 2]));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let stats = c.stats();
    assert_eq!((stats.computations, stats.hits, stats.faults), (2, 1, 0));
}

async fn compute_errors_reach_the_caller_and_store_nothing(h: Harness) {
    let c = &h.cache;
    let failing = || async { Err::<(u32, [Dep; 0]), _>(DbError("connection refused")) };
    assert_eq!(
        c.get_or_compute("k", MINUTE, failing).await,
        Err(DbError("connection refused"))
    );
    assert!(!c.has("k").await.unwrap());
    // The next caller computes normally (nothing was left locked).
    let ok = || async { Ok::<_, DbError>((7u32, [])) };
    assert_eq!(c.get_or_compute("k", MINUTE, ok).await, Ok(7));
}

async fn fenced_put_refuses_values_older_than_an_invalidation(h: Harness) {
    let c = &h.cache;
    let (article, other) = (dep::id("article", 1), dep::id("article", 2));
    let ticket = c.ticket().await.unwrap();
    c.invalidate([article.clone()]).await.unwrap();
    assert!(!c
        .put_fenced("a", "old", [article.clone()], MINUTE, &ticket)
        .await
        .unwrap());
    assert!(!c.has("a").await.unwrap());
    // Unrelated dependencies do not fence.
    assert!(c
        .put_fenced("b", "fine", [other], MINUTE, &ticket)
        .await
        .unwrap());
    // A ticket taken after the invalidation stores.
    let ticket = c.ticket().await.unwrap();
    assert!(c
        .put_fenced("a", "new", [article.clone()], MINUTE, &ticket)
        .await
        .unwrap());
    assert_eq!(c.get::<String>("a").await.unwrap().as_deref(), Some("new"));
    // And what it stored is invalidated as usual.
    assert_eq!(c.invalidate([article]).await.unwrap(), 1);
    assert_eq!(c.stats().fenced, 1);
}

/// A computation during which its dependency is invalidated returns its value but does not
/// store it.
async fn invalidation_during_computation_fences_the_result(h: Harness) {
    let c = h.cache.clone();
    let invalidator = h.other_client().await;
    let value: u32 = c
        .get_or_compute("k", MINUTE, || async {
            invalidator.invalidate([dep::id("row", 1)]).await.unwrap();
            Ok::<_, DbError>((1, [dep::id("row", 1)]))
        })
        .await
        .unwrap();
    assert_eq!(value, 1);
    assert!(!c.has("k").await.unwrap());
    assert_eq!(c.stats().fenced, 1);
    // Dependencies discovered during the computation are fenced too.
    let value: u32 = c
        .get_or_compute("k", MINUTE, || async {
            depends_on([dep::tag("late")]);
            invalidator.invalidate([dep::tag("late")]).await.unwrap();
            Ok::<_, DbError>((2, []))
        })
        .await
        .unwrap();
    assert_eq!(value, 2);
    assert!(!c.has("k").await.unwrap());
}

async fn concurrent_misses_compute_once(h: Harness) {
    let runs = Arc::new(AtomicU32::new(0));
    let mut tasks = vec![];
    for i in 0..16 {
        // Half on another client: on Redis, another process (the lease), in memory a clone.
        let cache = if i % 2 == 0 {
            h.cache.clone()
        } else {
            h.other_client().await
        };
        let runs = Arc::clone(&runs);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute("hot", MINUTE, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, DbError>((42u32, [dep::tag("t")]))
                })
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Followers of a computation whose result was fenced out compute again instead of returning
/// the leader's (possibly stale) value.
async fn followers_recompute_when_the_leader_is_fenced_out(h: Harness) {
    let cache = h.cache.clone();
    let version = Arc::new(AtomicU32::new(1));
    let leader = {
        let (cache, version) = (cache.clone(), Arc::clone(&version));
        tokio::spawn(async move {
            cache
                .get_or_compute("v", MINUTE, || async move {
                    let read = version.load(Ordering::SeqCst);
                    // The row changes while this computation is still running.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, DbError>((read, [dep::id("row", 1)]))
                })
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let followers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, version) = (cache.clone(), Arc::clone(&version));
            tokio::spawn(async move {
                cache
                    .get_or_compute("v", MINUTE, || async move {
                        Ok::<_, DbError>((version.load(Ordering::SeqCst), [dep::id("row", 1)]))
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    version.store(2, Ordering::SeqCst);
    cache.invalidate([dep::id("row", 1)]).await.unwrap();
    assert_eq!(leader.await.unwrap(), 1); // its own caller began before the write
    for follower in followers {
        assert_eq!(
            follower.await.unwrap(),
            2,
            "a follower returned the fenced-out value"
        );
    }
    assert_eq!(cache.get::<u32>("v").await.unwrap(), Some(2));
}

/// A key asked for inside its own computation, directly or through another key, is computed
/// without the cache instead of waiting for itself forever.
async fn cycles_are_detected_not_waited_for(h: Harness) {
    let c = h.cache.clone();
    let limit = Duration::from_secs(30); // the bug was an endless wait: bound the test
    let direct: String = tokio::time::timeout(
        limit,
        c.get_or_compute("a", MINUTE, || async {
            let inner: String = c
                .get_or_compute("a", MINUTE, || async {
                    Ok::<_, DbError>(("inner".to_owned(), [dep::tag("x")]))
                })
                .await?;
            Ok::<_, DbError>((format!("outer({inner})"), [dep::tag("y")]))
        }),
    )
    .await
    .expect("get_or_compute waited for its own computation")
    .unwrap();
    assert_eq!(direct, "outer(inner)");
    assert_eq!(c.stats().faults, 1);
    // The inner value was not stored; the outer was, with the inner's dependencies too.
    assert_eq!(
        c.get::<String>("a").await.unwrap().as_deref(),
        Some("outer(inner)")
    );
    assert_eq!(
        c.deps("a").await.unwrap().unwrap(),
        [dep::tag("x"), dep::tag("y")]
    );

    let via_b: String = tokio::time::timeout(
        limit,
        c.get_or_compute("p", MINUTE, || async {
            let b: String = c
                .get_or_compute("q", MINUTE, || async {
                    let p: String = c
                        .get_or_compute("p", MINUTE, || async {
                            Ok::<_, DbError>(("p-inner".to_owned(), []))
                        })
                        .await?;
                    Ok::<_, DbError>((format!("q({p})"), []))
                })
                .await?;
            Ok::<_, DbError>((format!("p({b})"), []))
        }),
    )
    .await
    .expect("get_or_compute waited for its own computation through another key")
    .unwrap();
    assert_eq!(via_b, "p(q(p-inner))");
    assert_eq!(c.stats().faults, 2);
    // The same key in another cache is not a cycle.
    let other = h.other_client().await;
    let nested: u32 = c
        .get_or_compute("n", MINUTE, || async {
            let v: u32 = other
                .get_or_compute("other-n", MINUTE, || async { Ok::<_, DbError>((1, [])) })
                .await?;
            Ok::<_, DbError>((v + 1, []))
        })
        .await
        .unwrap();
    assert_eq!(nested, 2);
}

/// Single flight is bounded: with the dependency invalidated every 5 ms and a 20 ms
/// computation, every leader is fenced out. Callers must not queue behind one leader after
/// another (the k-th waiting for k computations): each waits for at most one other
/// computation before running its own.
async fn single_flight_waits_for_at_most_one_computation(h: Harness) {
    let cache = h.cache.clone();
    let finished = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let invalidator = {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                cache.invalidate([dep::tag("hot")]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, finished) = (cache.clone(), Arc::clone(&finished));
            tokio::spawn(async move {
                let at_start = finished.load(Ordering::SeqCst);
                let waited = Arc::new(std::sync::Mutex::new(None));
                let seen = Arc::clone(&waited);
                let value: u32 = cache
                    .get_or_compute("hot-key", MINUTE, || async move {
                        // How many computations this call saw finish before its own began.
                        *seen.lock().unwrap() = Some(finished.load(Ordering::SeqCst) - at_start);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, DbError>((1, [dep::tag("hot")]))
                    })
                    .await
                    .unwrap();
                assert_eq!(value, 1);
                let waited = *waited.lock().unwrap();
                waited
            })
        })
        .collect();
    let mut computed = 0;
    for caller in callers {
        if let Some(waited) = caller.await.unwrap() {
            computed += 1;
            assert!(
                waited <= 1,
                "a caller waited for {waited} computations before running its own"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    invalidator.await.unwrap();
    assert!(computed >= 1);
    assert!(
        cache.stats().fenced >= 1,
        "the invalidations should fence leaders out"
    );
}

/// The caller that wins the lease re-checks the cache: a value stored between its miss and
/// its `begin` is used, not computed again.
async fn the_lease_winner_rechecks_the_cache(h: Harness) {
    let backend_view = h.other_client().await;
    // A ticket-and-lease request for a cached key returns the entry instead of a lease.
    backend_view
        .put("cached", &5u32, [dep::tag("c")], MINUTE)
        .await
        .unwrap();
    let lease = h.begin_with_lease("cached").await;
    match lease {
        matroska_cache::Lease::Cached((encoded, deps)) => {
            assert_eq!(encoded.decode::<u32>("cached").unwrap(), 5);
            assert_eq!(deps, [dep::tag("c")]);
        }
        other => panic!("expected the cached entry, got {other:?}"),
    }
    // And no lease was taken: another caller can take it.
    assert_eq!(
        h.begin_with_lease("uncached").await,
        matroska_cache::Lease::Granted
    );
}

/// A leader dropped mid-computation does not strand its followers.
async fn a_cancelled_leader_frees_the_key(h: Harness) {
    let cache = h.cache.clone();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("k", MINUTE, || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, DbError>((0u32, []))
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = {
        let cache = h.other_client().await;
        tokio::spawn(async move {
            cache
                .get_or_compute("k", MINUTE, || async { Ok::<_, DbError>((9u32, [])) })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    let value = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower waited for a cancelled leader");
    assert_eq!(value.unwrap(), Ok(9));
}

/// Russian dolls: fragments computed (or found) inside a page's computation add their
/// dependencies to the page.
async fn nested_computations_propagate_dependencies(h: Harness) {
    let c = h.cache.clone();
    let fragment = |id: u32| {
        let c = c.clone();
        async move {
            c.get_or_compute(&format!("fragment:{id}"), MINUTE, || async move {
                Ok::<_, DbError>((format!("<p>{id}</p>"), [dep::id("article", id)]))
            })
            .await
        }
    };
    fragment(2).await.unwrap(); // cached before the page: found, not computed, inside it
    let page: String = c
        .get_or_compute("page", MINUTE, || async {
            let a = fragment(1).await?;
            let b = fragment(2).await?;
            depends_on([dep::tag("layout")]);
            Ok::<_, DbError>((a + &b, [dep::tag("page")]))
        })
        .await
        .unwrap();
    assert_eq!(page, "<p>1</p><p>2</p>");
    let mut deps = c.deps("page").await.unwrap().unwrap();
    deps.sort();
    assert_eq!(
        deps,
        vec![
            dep::id("article", 1),
            dep::id("article", 2),
            dep::tag("layout"),
            dep::tag("page")
        ]
    );
    // Changing the article inside a cached fragment drops the page too.
    assert_eq!(c.invalidate([dep::id("article", 2)]).await.unwrap(), 2);
    assert!(!c.has("page").await.unwrap());
    assert!(c.has("fragment:1").await.unwrap());
    // Outside any computation depends_on does nothing.
    assert!(!depends_on([dep::tag("x")]));
}

/// An inner computation that fails still adds what it read to the outer entry: the outer
/// value (a fallback here) was built from the same data.
async fn failed_nested_computations_propagate_dependencies(h: Harness) {
    let c = &h.cache;
    let page: String = c
        .get_or_compute("page", MINUTE, || async {
            let comments = c
                .get_or_compute("comments:1", MINUTE, || async {
                    depends_on([dep::id("article", 1)]);
                    Err::<(String, [Dep; 0]), _>(DbError("comments are disabled"))
                })
                .await
                .unwrap_or_else(|_| "(no comments)".to_owned());
            Ok::<_, DbError>((comments, [dep::tag("page")]))
        })
        .await
        .unwrap();
    assert_eq!(page, "(no comments)");
    assert!(!c.has("comments:1").await.unwrap());
    assert_eq!(
        c.deps("page").await.unwrap(),
        Some(vec![dep::id("article", 1), dep::tag("page")])
    );
    assert_eq!(c.invalidate([dep::id("article", 1)]).await.unwrap(), 1);
}

async fn undecodable_values_are_recomputed(h: Harness) {
    let c = &h.cache;
    c.put("k", "not a number", [], MINUTE).await.unwrap();
    let v: u32 = c
        .get_or_compute("k", MINUTE, || async { Ok::<_, DbError>((5, [])) })
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(5));
    assert_eq!(c.stats().faults, 1);
}

backend_tests!(
    misses_compute_and_hits_do_not,
    compute_errors_reach_the_caller_and_store_nothing,
    fenced_put_refuses_values_older_than_an_invalidation,
    invalidation_during_computation_fences_the_result,
    concurrent_misses_compute_once,
    followers_recompute_when_the_leader_is_fenced_out,
    a_cancelled_leader_frees_the_key,
    cycles_are_detected_not_waited_for,
    single_flight_waits_for_at_most_one_computation,
    the_lease_winner_rechecks_the_cache,
    nested_computations_propagate_dependencies,
    failed_nested_computations_propagate_dependencies,
    undecodable_values_are_recomputed,
);

/// Redis down: get_or_compute still answers (computing), counts the faults, and caches again
/// once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_fail_open() {
    let h = support::redis().await;
    let Kind::Redis { mut server, prefix } = h.kind else {
        unreachable!()
    };
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), &prefix)
            .timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap(),
    );
    server.kill();
    let compute = || async { Ok::<_, DbError>((1u32, [dep::tag("t")])) };
    assert_eq!(cache.get_or_compute("k", MINUTE, compute).await, Ok(1));
    assert!(cache.stats().faults >= 1);
    // The computation's own error still reaches the caller.
    let failing = || async { Err::<(u32, [Dep; 0]), _>(DbError("db down")) };
    assert_eq!(
        cache.get_or_compute("k", MINUTE, failing).await,
        Err(DbError("db down"))
    );
    server.restart();
    let mut cached = false;
    for _ in 0..100 {
        cache.get_or_compute("k", MINUTE, compute).await.unwrap();
        if cache.has("k").await.unwrap_or(false) {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cached, "caching did not resume after Redis came back");
}

/// Waiters do not wait for a dead lease holder: after half the lease timeout they compute
/// themselves, and their (fenced) result is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_stop_waiting_for_a_dead_lease_holder() {
    let h = support::redis().await;
    let Kind::Redis { server, prefix } = &h.kind else {
        unreachable!()
    };
    let backend = RedisBackend::builder(&server.url(), prefix)
        .build()
        .await
        .unwrap();
    let cache = MatroskaCache::builder(backend)
        .lease_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // Another process took the lease and died; its lease would stay for a minute.
    let mut conn = server.connection();
    let _: () = ::redis::cmd("SET")
        .arg(format!("{{{prefix}}}:l:k"))
        .arg("12345")
        .arg("PX")
        .arg(60_000)
        .query(&mut conn)
        .unwrap();
    let started = std::time::Instant::now();
    let v: u32 = cache
        .get_or_compute("k", MINUTE, || async { Ok::<_, DbError>((3, [])) })
        .await
        .unwrap();
    assert_eq!(v, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it did not wait for the lease holder at all"
    );
    assert!(
        cache.has("k").await.unwrap(),
        "the fenced result is cached without the lease"
    );
}

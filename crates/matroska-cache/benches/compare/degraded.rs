//! `get_or_compute` while Redis hangs (`SIGSTOP`: connections stay open, nothing answers):
//! call latency with the default circuit breaker next to the same cache without one, in one
//! run, on a local `redis-server` with the default 2 s timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use matroska_cache::{dep, MatroskaCache, RedisBackend};
use matroska_test_support::RedisServer;
use tokio::sync::Mutex;

const TASKS: usize = 4;
const WINDOW: Duration = Duration::from_secs(8);
/// Calls that start this long after the pause count as "after the breaker opened" (three
/// timeouts of 2 s each have passed by then).
const SETTLED: Duration = Duration::from_millis(2_500);

pub async fn section() {
    println!(
        "| breaker | calls in {:?} | p50 | p90 | p99 | max | p90 of calls after {:?} |",
        WINDOW, SETTLED
    );
    println!("|---|---|---|---|---|---|---|");
    for breaker in [true, false] {
        let server = tokio::task::block_in_place(RedisServer::start);
        let builder = RedisBackend::builder(&server.url(), "degraded").auto_prune(None);
        let builder = if breaker {
            builder
        } else {
            builder.no_circuit_breaker()
        };
        let cache = MatroskaCache::new(builder.build().await.expect("backend"));
        cache
            .put("warm", &1, [], Duration::from_secs(60))
            .await
            .expect("put");
        server.pause();
        let paused = Instant::now();
        let calls: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::default();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (cache, calls) = (cache.clone(), Arc::clone(&calls));
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while paused.elapsed() < WINDOW {
                        let started = Instant::now();
                        let key = format!("k{task}-{n}");
                        let _: u64 = cache
                            .get_or_compute(&key, Duration::from_secs(60), || async move {
                                // The database's share of the call.
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                Ok::<_, std::io::Error>((n, [dep::tag("t")]))
                            })
                            .await
                            .expect("computed");
                        calls
                            .lock()
                            .await
                            .push((started - paused, started.elapsed()));
                        n += 1;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        server.resume();
        let calls = calls.lock().await;
        let mut all: Vec<Duration> = calls.iter().map(|(_, took)| *took).collect();
        let mut settled: Vec<Duration> = calls
            .iter()
            .filter(|(at, _)| *at >= SETTLED)
            .map(|(_, took)| *took)
            .collect();
        all.sort();
        settled.sort();
        let at = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            if breaker {
                "on (3 failures, 1 s)"
            } else {
                "off"
            },
            all.len(),
            ms(at(&all, 0.5)),
            ms(at(&all, 0.9)),
            ms(at(&all, 0.99)),
            ms(all[all.len() - 1]),
            if settled.is_empty() {
                "-".to_owned()
            } else {
                ms(at(&settled, 0.9))
            },
        );
    }
}

/// Callers of one key while Redis hangs, its breaker open.
const CALLERS: usize = 32;
/// The database's share of each computation.
const COMPUTING: Duration = Duration::from_millis(20);

/// `get_or_compute` of one key by 32 concurrent callers for 3 s, with Redis paused and its
/// breaker open (default settings): computations of the key running at once, computations
/// per caller call, and call latency. Before single flight on the fault path every caller
/// computed (32 at once); the table prints that baseline as the computation's own time.
pub async fn one_key() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let backend = RedisBackend::builder(&server.url(), "one-key")
        .auto_prune(None)
        .build()
        .await
        .expect("backend");
    let cache = MatroskaCache::new(backend);
    server.pause();
    // Open the breaker: three timeouts.
    for _ in 0..3 {
        let _ = cache.get::<u64>("k").await;
    }
    assert!(cache.stats().breaker_openings > 0);
    let (running, most, computations) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let started = Instant::now();
    let calls: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls) = (cache.clone(), Arc::clone(&calls));
            let (running, most, computations) = (
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&computations),
            );
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(3) {
                    let call = Instant::now();
                    let (running, most, computations) = (&running, &most, &computations);
                    let _: u64 = cache
                        .get_or_compute("page", Duration::from_secs(60), || async move {
                            computations.fetch_add(1, Ordering::SeqCst);
                            most.fetch_max(
                                running.fetch_add(1, Ordering::SeqCst) + 1,
                                Ordering::SeqCst,
                            );
                            tokio::time::sleep(COMPUTING).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, std::io::Error>((1, [dep::tag("t")]))
                        })
                        .await
                        .expect("computed");
                    calls.lock().await.push(call.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    server.resume();
    let mut calls = calls.lock().await.clone();
    calls.sort();
    let at = |q: f64| calls[((calls.len() - 1) as f64 * q) as usize];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "| callers | calls | computations | most at once | p50 | p90 | p99 | one computation |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {CALLERS} | {} | {} | {} | {} | {} | {} | {} |",
        calls.len(),
        computations.load(Ordering::SeqCst),
        most.load(Ordering::SeqCst),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(COMPUTING),
    );
}

/// Hit latency of `get_or_compute` on a fresh entry next to one due for a refresh (every hit
/// is due; the refresh takes 50 ms, so most hits find one running), on a local Redis.
pub async fn refresh_ahead() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let backend = RedisBackend::builder(&server.url(), "refresh")
        .auto_prune(None)
        .build()
        .await
        .expect("backend");
    let cache = MatroskaCache::new(backend);
    let ttl = Duration::from_secs(600);
    println!("| entry | hits | p50 | p99 | refreshes |");
    println!("|---|---|---|---|---|");
    for due in [false, true] {
        let key = if due { "due" } else { "plain" };
        let read = || {
            let cache = cache.clone();
            async move {
                let entry = cache.entry(key).ttl(ttl);
                let compute = || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(("<h1>page</h1>".repeat(50), [dep::tag("t")]))
                };
                let page: String = if due {
                    entry
                        .refresh_after(Duration::from_millis(1))
                        .get_or_compute(compute)
                        .await
                } else {
                    entry.get_or_compute(compute).await
                }
                .expect("computed");
                page
            }
        };
        read().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = cache.stats().refreshes;
        let mut took = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            let started = Instant::now();
            read().await;
            took.push(started.elapsed());
        }
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        println!(
            "| {} | {} | {} | {} | {} |",
            if due { "due for a refresh" } else { "fresh" },
            took.len(),
            us(at(0.5)),
            us(at(0.99)),
            cache.stats().refreshes - before,
        );
    }
}

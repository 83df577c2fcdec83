//! `get_or_compute` while Redis hangs (`SIGSTOP`: connections stay open, nothing answers):
//! call latency with the default circuit breaker next to the same cache without one, in one
//! run, on a local `redis-server` with the default 2 s timeout.

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

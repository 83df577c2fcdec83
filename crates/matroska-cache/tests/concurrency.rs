//! Many tasks put, get and invalidate at once; a checker reads the recorded history.
//!
//! Every operation records its start and end on one logical clock. A read is *stale* if it
//! returns the value of a put that depended on `d` and ended before an invalidation of `d`
//! began, when that invalidation ended before the read began. There must be none.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matroska_cache::{dep, Dep, MatroskaCache};
use rand::{Rng, SeedableRng};
use support::Harness;

const KEYS: u64 = 16;
const DEPS: u64 = 6;
const TASKS: u64 = 8;
const OPS_PER_TASK: u64 = 1_500;

#[derive(Debug)]
struct Put {
    key: u64,
    deps: Vec<u64>,
    end: u64,
}

#[derive(Debug)]
struct Invalidation {
    dep: u64,
    dropped: u64,
    begin: u64,
    end: u64,
}

#[derive(Debug)]
struct Read {
    key: u64,
    value: Option<u64>,
    begin: u64,
}

#[derive(Default)]
struct History {
    puts: Mutex<HashMap<u64, Put>>,
    invalidations: Mutex<Vec<Invalidation>>,
    reads: Mutex<Vec<Read>>,
    clock: AtomicU64,
    next_value: AtomicU64,
}

impl History {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

fn tag(d: u64) -> Dep {
    dep::tag(&format!("d{d}"))
}

async fn worker(cache: MatroskaCache, history: Arc<History>, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..OPS_PER_TASK {
        let key = rng.random_range(0..KEYS);
        match rng.random_range(0..10) {
            0..=3 => {
                let value = history.next_value.fetch_add(1, Ordering::SeqCst);
                let mut deps = vec![rng.random_range(0..DEPS)];
                if rng.random_bool(0.5) {
                    deps.push(rng.random_range(0..DEPS));
                }
                let ttl = Duration::from_secs(60);
                cache
                    .put(
                        &format!("k{key}"),
                        &value,
                        deps.iter().map(|&d| tag(d)),
                        ttl,
                    )
                    .await
                    .unwrap();
                let end = history.tick();
                history
                    .puts
                    .lock()
                    .unwrap()
                    .insert(value, Put { key, deps, end });
            }
            4 => {
                let d = rng.random_range(0..DEPS);
                let begin = history.tick();
                let dropped = cache.invalidate([tag(d)]).await.unwrap();
                let end = history.tick();
                let invalidation = Invalidation {
                    dep: d,
                    dropped,
                    begin,
                    end,
                };
                history.invalidations.lock().unwrap().push(invalidation);
            }
            _ => {
                let begin = history.tick();
                let value = cache.get::<u64>(&format!("k{key}")).await.unwrap();
                history
                    .reads
                    .lock()
                    .unwrap()
                    .push(Read { key, value, begin });
            }
        }
    }
}

async fn no_stale_read_after_invalidate_returns(h: Harness) {
    let history = Arc::new(History::default());
    let mut tasks = vec![];
    for seed in 0..TASKS {
        // Half the tasks use their own client, as other processes would.
        let cache = if seed % 2 == 0 {
            h.cache.clone()
        } else {
            h.other_client().await
        };
        tasks.push(tokio::spawn(worker(cache, Arc::clone(&history), seed)));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let puts = history.puts.lock().unwrap();
    let invalidations = history.invalidations.lock().unwrap();
    let reads = history.reads.lock().unwrap();
    let mut stale = 0;
    let mut examples = vec![];
    let mut hits = 0;
    for read in reads.iter() {
        let Some(value) = read.value else { continue };
        hits += 1;
        let put = &puts[&value];
        assert_eq!(put.key, read.key, "a read returned another key's value");
        let bad: Vec<_> = invalidations
            .iter()
            .filter(|i| put.deps.contains(&i.dep) && put.end < i.begin && i.end < read.begin)
            .collect();
        if let Some(invalidation) = bad.first() {
            stale += 1;
            if examples.len() < 5 {
                examples.push(format!("{read:?} of {put:?} after {invalidation:?}"));
            }
        }
    }
    assert_eq!(
        stale,
        0,
        "{stale} stale reads out of {} ({hits} hits): {examples:#?}",
        reads.len()
    );
    // The history must be one where the check means something.
    assert!(
        hits > reads.len() / 10,
        "only {hits} hits out of {} reads",
        reads.len()
    );
    assert!(invalidations.len() > 100 && puts.len() > 1_000);
    let dropped: u64 = invalidations.iter().map(|i| i.dropped).sum();
    assert!(
        dropped > 100,
        "invalidations dropped only {dropped} entries"
    );
}

/// Directly: once `invalidate` returns, nothing that depended on it is readable, even while
/// other tasks write other keys.
async fn invalidate_is_visible_when_it_returns(h: Harness) {
    let writer = h.other_client().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                writer
                    .put(
                        &format!("noise{}", i % 50),
                        &i,
                        [dep::tag("noise")],
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                i += 1;
            }
        })
    };
    for round in 0..200u64 {
        let deps = [dep::id("round", round), dep::tag("rounds")];
        for k in 0..5 {
            h.cache
                .put(
                    &format!("r{k}"),
                    &round,
                    deps.clone(),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
        }
        let dropped = h.cache.invalidate([dep::id("round", round)]).await.unwrap();
        assert_eq!(dropped, 5);
        for k in 0..5 {
            assert_eq!(
                h.cache.get::<u64>(&format!("r{k}")).await.unwrap(),
                None,
                "round {round}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
}

backend_tests!(
    no_stale_read_after_invalidate_returns,
    invalidate_is_visible_when_it_returns
);

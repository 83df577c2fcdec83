//! Counters of what a cache did.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a cache's counters, from [`MatroskaCache::stats`](crate::MatroskaCache::stats).
///
/// Counters are per [`MatroskaCache`](crate::MatroskaCache) value and shared by its clones;
/// they count this process's operations only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `get`s that found a value.
    pub hits: u64,
    /// `get`s that found nothing.
    pub misses: u64,
    /// Successful `put`s.
    pub puts: u64,
    /// Successful `invalidate` calls.
    pub invalidations: u64,
    /// Entries dropped by those invalidations.
    pub dropped: u64,
    /// Operations that failed with an error.
    pub errors: u64,
    /// Values computed by `get_or_compute` (misses that ran the computation).
    pub computations: u64,
    /// Fenced puts (and `get_or_compute` results) not stored because a dependency was
    /// invalidated while they were computed.
    pub fenced: u64,
    /// Cache faults that `get_or_compute` absorbed (Redis down, an undecodable value): it
    /// computed the value instead of failing.
    pub faults: u64,
    /// Calls that failed at once with [`Error::Unavailable`](crate::Error::Unavailable): a
    /// server's circuit breaker was open.
    pub fast_failures: u64,
    /// How often a server's circuit breaker opened (Redis backend).
    pub breaker_openings: u64,
    /// Dependencies of failed invalidations dropped from the retry queue (it was full, or
    /// the retry failed for good): their dependents may stay readable until their TTL.
    pub invalidations_not_retried: u64,
    /// Expired values that read-through returned as a fail-safe fallback because computing
    /// failed ([`Entry::fail_safe`](crate::Entry::fail_safe)).
    pub fail_safe_hits: u64,
    /// Background refreshes that recomputed an entry after a hit found it due for one
    /// ([`Entry::refresh_after`](crate::Entry::refresh_after)); refreshes that found another
    /// process refreshing, or the entry refreshed already, are not counted.
    pub refreshes: u64,
}

/// One counter of [`Counters`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Puts,
    Invalidations,
    Dropped,
    Errors,
    Computations,
    Fenced,
    Faults,
    FastFailures,
    InvalidationsNotRetried,
    FailSafeHits,
    Refreshes,
}

const COUNTERS: usize = 13;

/// One thread's share of every counter, on its own cache line: threads counting hits at
/// millions per second would otherwise fight over one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTERS]);

/// Striped counters: each thread adds to one stripe, a snapshot sums them. With the
/// `metrics` feature every count and latency also goes to the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
    #[cfg(feature = "metrics")]
    exported: exported::Handles,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new("memory")
    }
}

/// Which stripe this thread adds to (threads are numbered in order of first use).
fn stripe_of_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    STRIPE.with(|s| *s)
}

/// An operation whose latency is measured.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Get,
    Put,
    Invalidate,
}

/// Measures one operation until dropped (without the `metrics` feature, nothing).
pub(crate) struct Timer<'a> {
    #[cfg(feature = "metrics")]
    running: (&'a metrics::Histogram, std::time::Instant),
    #[cfg(not(feature = "metrics"))]
    running: std::marker::PhantomData<&'a ()>,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.running
            .0
            .record(self.running.1.elapsed().as_secs_f64());
    }
}

impl Counters {
    /// Counters of the cache `label` (its Redis prefix, or "memory") in exported metrics.
    pub(crate) fn new(label: &str) -> Self {
        let stripes = std::thread::available_parallelism()
            .map_or(4, usize::from)
            .next_power_of_two()
            .clamp(1, 64);
        #[cfg(not(feature = "metrics"))]
        let _ = label;
        Counters {
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
            #[cfg(feature = "metrics")]
            exported: exported::Handles::new(label),
        }
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let stripe = &self.stripes[stripe_of_thread() % self.stripes.len()];
        stripe.0[counter as usize].fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.counters[counter as usize].increment(n);
    }

    /// Starts measuring `op`'s latency; it is recorded when the timer is dropped.
    pub(crate) fn time(&self, op: Op) -> Timer<'_> {
        Timer {
            #[cfg(feature = "metrics")]
            running: (
                &self.exported.latencies[op as usize],
                std::time::Instant::now(),
            ),
            #[cfg(not(feature = "metrics"))]
            running: {
                let _ = op;
                std::marker::PhantomData
            },
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let read = |c: Counter| {
            self.stripes
                .iter()
                .map(|s| s.0[c as usize].load(Ordering::Relaxed))
                .sum()
        };
        Stats {
            hits: read(Counter::Hits),
            misses: read(Counter::Misses),
            puts: read(Counter::Puts),
            invalidations: read(Counter::Invalidations),
            dropped: read(Counter::Dropped),
            errors: read(Counter::Errors),
            computations: read(Counter::Computations),
            fenced: read(Counter::Fenced),
            faults: read(Counter::Faults),
            fast_failures: read(Counter::FastFailures),
            invalidations_not_retried: read(Counter::InvalidationsNotRetried),
            fail_safe_hits: read(Counter::FailSafeHits),
            refreshes: read(Counter::Refreshes),
            breaker_openings: 0,
        }
    }
}

/// The `metrics` facade's handles, registered once per cache.
#[cfg(feature = "metrics")]
mod exported {
    use super::COUNTERS;

    /// Counter names, in the order of [`Counter`](super::Counter).
    const COUNTER_NAMES: [&str; COUNTERS] = [
        "matroska_cache_hits_total",
        "matroska_cache_misses_total",
        "matroska_cache_puts_total",
        "matroska_cache_invalidations_total",
        "matroska_cache_dropped_total",
        "matroska_cache_errors_total",
        "matroska_cache_computations_total",
        "matroska_cache_fenced_total",
        "matroska_cache_faults_total",
        "matroska_cache_fast_failures_total",
        "matroska_cache_invalidations_not_retried_total",
        "matroska_cache_fail_safe_hits_total",
        "matroska_cache_refreshes_total",
    ];

    /// Histogram names, in the order of [`Op`](super::Op).
    const LATENCY_NAMES: [&str; 3] = [
        "matroska_cache_get_seconds",
        "matroska_cache_put_seconds",
        "matroska_cache_invalidate_seconds",
    ];

    #[derive(Debug)]
    pub(super) struct Handles {
        pub(super) counters: Vec<metrics::Counter>,
        pub(super) latencies: Vec<metrics::Histogram>,
    }

    impl Handles {
        /// Registers every metric of one cache with the recorder installed now, labelled
        /// `prefix = label`.
        pub(super) fn new(label: &str) -> Self {
            let label = label.to_owned();
            Handles {
                counters: COUNTER_NAMES
                    .iter()
                    .map(|name| metrics::counter!(*name, "prefix" => label.clone()))
                    .collect(),
                latencies: LATENCY_NAMES
                    .iter()
                    .map(|name| metrics::histogram!(*name, "prefix" => label.clone()))
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_add_up() {
        let counters = std::sync::Arc::new(Counters::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counters = std::sync::Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.add(Counter::Hits, 1);
                    }
                    counters.add(Counter::Dropped, 5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = counters.snapshot();
        assert_eq!((stats.hits, stats.dropped, stats.misses), (8000, 40, 0));
    }
}

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
}

const COUNTERS: usize = 9;

/// One thread's share of every counter, on its own cache line: threads counting hits at
/// millions per second would otherwise fight over one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTERS]);

/// Striped counters: each thread adds to one stripe, a snapshot sums them.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

impl Default for Counters {
    fn default() -> Self {
        let stripes = std::thread::available_parallelism()
            .map_or(4, usize::from)
            .next_power_of_two()
            .clamp(1, 64);
        Counters {
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
        }
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

impl Counters {
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        let stripe = &self.stripes[stripe_of_thread() % self.stripes.len()];
        stripe.0[counter as usize].fetch_add(n, Ordering::Relaxed);
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

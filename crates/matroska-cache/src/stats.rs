//! Counters of what a cache did.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) puts: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) computations: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) faults: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            hits: read(&self.hits),
            misses: read(&self.misses),
            puts: read(&self.puts),
            invalidations: read(&self.invalidations),
            dropped: read(&self.dropped),
            errors: read(&self.errors),
            computations: read(&self.computations),
            fenced: read(&self.fenced),
            faults: read(&self.faults),
        }
    }
}

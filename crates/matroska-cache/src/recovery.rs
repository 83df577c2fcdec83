//! Auto-recovery of failed invalidations.
//!
//! An invalidation that fails for a transient reason (Redis timed out, hung or unreachable)
//! still returns its error, and its dependencies are also queued in this process: a task
//! retries them, all pending at once, with backoff, until the backend takes them. Meanwhile
//! this process's own reads treat an entry that depends on a queued dependency as absent,
//! so the process that changed the data never reads the old value back. (Other processes
//! may, until the retry succeeds: the invalidation did not reach them.) The cache's
//! invalidation hooks run at the failed attempt and again when the retry succeeds.
//!
//! The queue holds at most [`MAX_PENDING_INVALIDATIONS`] dependencies; more are dropped and
//! logged as errors (the oldest are kept: they have waited longest).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::cache::Inner;
use crate::dep::Dep;
use crate::stats::Counter;

/// The most dependencies of failed invalidations a process keeps to retry.
pub const MAX_PENDING_INVALIDATIONS: usize = 100_000;

/// The first wait before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Dependencies of failed invalidations, waiting for a retry.
///
/// Each invalidation (the application's and the retries) takes a number when it begins; a
/// queued dependency keeps the number of the latest failed invalidation of it. An
/// invalidation that succeeds removes the dependencies queued by invalidations that began
/// before it: it dropped everything they had to. (One queued by an invalidation that began
/// later stays: entries stored in between may remain.)
#[derive(Default)]
pub(crate) struct Recovery {
    pending: Mutex<BTreeMap<Dep, u64>>,
    /// `pending.len()`, set under its lock: reads check it without the lock while nothing
    /// waits (almost always).
    waiting: AtomicUsize,
    next: AtomicU64,
    /// Shared with the retrying task, which must not keep the cache alive while it waits.
    wake: std::sync::Arc<Notify>,
    running: AtomicBool,
}

impl Recovery {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<Dep, u64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of an invalidation that begins now.
    pub(crate) fn begin(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// An invalidation of `deps` numbered `began` succeeded: what earlier ones queued of
    /// them is done.
    pub(crate) fn succeeded(&self, deps: &[Dep], began: u64) {
        if !self.is_empty() {
            self.remove_before(deps, began);
        }
    }

    /// How many dependencies wait for a retry.
    pub(crate) fn len(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether any of `deps` waits for a retry: an entry built from it is stale.
    pub(crate) fn any_pending(&self, deps: &[Dep]) -> bool {
        if self.is_empty() {
            return false;
        }
        let pending = self.pending();
        deps.iter().any(|dep| pending.contains_key(dep))
    }

    /// Whether nothing waits (the reads' fast path: no lock).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes those of `deps` queued by invalidations that began before `began`.
    fn remove_before(&self, deps: &[Dep], began: u64) {
        let mut pending = self.pending();
        for dep in deps {
            if pending.get(dep).is_some_and(|queued| *queued < began) {
                pending.remove(dep);
            }
        }
        self.waiting.store(pending.len(), Ordering::SeqCst);
    }

    /// Queues `deps` of the failed invalidation numbered `began` and makes sure a task of
    /// `inner`'s retries them; returns how many were dropped for want of room.
    pub(crate) fn enqueue(&self, inner: &std::sync::Arc<Inner>, deps: &[Dep], began: u64) -> usize {
        let dropped = {
            let mut pending = self.pending();
            let mut dropped = 0;
            for dep in deps {
                let full = pending.len() >= MAX_PENDING_INVALIDATIONS;
                match pending.get_mut(dep) {
                    Some(queued) => *queued = (*queued).max(began),
                    None if full => dropped += 1,
                    None => {
                        pending.insert(dep.clone(), began);
                    }
                }
            }
            self.waiting.store(pending.len(), Ordering::SeqCst);
            dropped
        };
        if dropped > 0 {
            inner
                .counters
                .add(Counter::InvalidationsNotRetried, dropped as u64);
            error!(
                dropped,
                "too many failed invalidations wait for a retry: these are not retried"
            );
        }
        self.wake.notify_one();
        if !self.running.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let wake = std::sync::Arc::clone(&self.wake);
                    runtime.spawn(retry(std::sync::Arc::downgrade(inner), wake));
                }
                Err(_) => self.running.store(false, Ordering::Release),
            }
        }
        dropped
    }
}

/// Retries what waits, all at once, with backoff, until the cache is dropped.
async fn retry(inner: Weak<Inner>, wake: std::sync::Arc<Notify>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(cache) = inner.upgrade() else {
            return;
        };
        let began = cache.recovery.begin();
        let deps: Vec<Dep> = cache.recovery.pending().keys().cloned().collect();
        if deps.is_empty() {
            backoff = FIRST_BACKOFF;
            drop(cache);
            // A notification sent while no one waits is kept: none is lost.
            wake.notified().await;
            continue;
        }
        match cache.backend.invalidate(&deps).await {
            Ok(dropped) => {
                cache.recovery.succeeded(&deps, began);
                // A CDN purged at the failed attempt may have been refilled from entries
                // that only now are gone: the hooks hear of it again.
                for hook in &cache.on_invalidate {
                    hook(&deps);
                }
                cache.counters.add(Counter::Invalidations, 1);
                cache.counters.add(Counter::Dropped, dropped);
                info!(
                    deps = deps.len(),
                    dropped, "failed invalidations retried and done"
                );
                backoff = FIRST_BACKOFF;
            }
            Err(error) if error.is_transient() => {
                drop(cache);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(error) => {
                // Not going to work by waiting (a full server refusing, a bad setting).
                cache.recovery.remove_before(&deps, began);
                cache
                    .counters
                    .add(Counter::InvalidationsNotRetried, deps.len() as u64);
                warn!(%error, deps = deps.len(), "a retried invalidation failed for good; dropped from the queue");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dep;

    #[test]
    fn a_success_clears_only_what_earlier_invalidations_queued() {
        let recovery = Recovery::default();
        let (a, b) = (dep::tag("a"), dep::tag("b"));
        let first = recovery.begin();
        let second = recovery.begin();
        recovery.pending().insert(a.clone(), second);
        recovery.pending().insert(b.clone(), first);
        recovery.waiting.store(2, Ordering::SeqCst);
        // An invalidation that began between the two failed ones: b's is done, a's is not.
        recovery.succeeded(&[a.clone(), b.clone()], second);
        assert!(recovery.any_pending(std::slice::from_ref(&a)));
        assert!(!recovery.any_pending(&[b]));
        let later = recovery.begin();
        recovery.succeeded(std::slice::from_ref(&a), later);
        assert!(recovery.is_empty());
    }
}

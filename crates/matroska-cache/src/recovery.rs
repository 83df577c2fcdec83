//! Auto-recovery of failed invalidations.
//!
//! An invalidation that fails for a transient reason (Redis timed out, hung or unreachable)
//! still returns its error, and its dependencies are also queued in this process: a task
//! retries them, all pending at once, with backoff, until the backend takes them. Meanwhile
//! this process's own reads treat an entry that depends on a queued dependency as absent,
//! so the process that changed the data never reads the old value back. (Other processes
//! may, until the retry succeeds: the invalidation did not reach them.)
//!
//! The queue holds at most [`MAX_PENDING_INVALIDATIONS`] dependencies; more are dropped and
//! logged as errors (the oldest are kept: they have waited longest).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
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
#[derive(Default)]
pub(crate) struct Recovery {
    pending: Mutex<BTreeSet<Dep>>,
    /// Shared with the retrying task, which must not keep the cache alive while it waits.
    wake: std::sync::Arc<Notify>,
    running: AtomicBool,
}

impl Recovery {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<Dep>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many dependencies wait for a retry.
    pub(crate) fn len(&self) -> usize {
        self.pending().len()
    }

    /// Whether any of `deps` waits for a retry: an entry built from it is stale.
    pub(crate) fn any_pending(&self, deps: &[Dep]) -> bool {
        let pending = self.pending();
        !pending.is_empty() && deps.iter().any(|dep| pending.contains(dep))
    }

    /// Whether nothing waits (the reads' fast path).
    pub(crate) fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Queues `deps` and makes sure a task of `inner`'s retries them; returns how many were
    /// dropped for want of room.
    pub(crate) fn enqueue(&self, inner: &std::sync::Arc<Inner>, deps: &[Dep]) -> usize {
        let dropped = {
            let mut pending = self.pending();
            let mut dropped = 0;
            for dep in deps {
                if pending.len() >= MAX_PENDING_INVALIDATIONS && !pending.contains(dep) {
                    dropped += 1;
                } else {
                    pending.insert(dep.clone());
                }
            }
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
        let deps: Vec<Dep> = cache.recovery.pending().iter().cloned().collect();
        if deps.is_empty() {
            backoff = FIRST_BACKOFF;
            drop(cache);
            // A notification sent while no one waits is kept: none is lost.
            wake.notified().await;
            continue;
        }
        match cache.backend.invalidate(&deps).await {
            Ok(dropped) => {
                let mut pending = cache.recovery.pending();
                for dep in &deps {
                    pending.remove(dep);
                }
                drop(pending);
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
                let mut pending = cache.recovery.pending();
                for dep in &deps {
                    pending.remove(dep);
                }
                drop(pending);
                cache
                    .counters
                    .add(Counter::InvalidationsNotRetried, deps.len() as u64);
                warn!(%error, deps = deps.len(), "a retried invalidation failed for good; dropped from the queue");
            }
        }
    }
}

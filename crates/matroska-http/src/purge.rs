//! Purging a CDN when dependencies are invalidated.
//!
//! A [`PurgeHook`] receives the dependencies of every invalidation the cache runs in this
//! process; [`purging`] turns one into a hook for
//! [`MatroskaCacheBuilder::on_invalidate`](matroska_cache::MatroskaCacheBuilder::on_invalidate).
//! A hook for a CDN usually maps them to that CDN's keys with
//! [`SurrogateKeys::purge_keys`](crate::SurrogateKeys::purge_keys), which adds the fallback
//! key of responses whose keys overflowed the header.
//!
//! ```
//! use futures_util::future::BoxFuture;
//! use matroska_cache::{dep, Dep, MatroskaCache, MemoryBackend};
//! use matroska_http::{purge::{purging, PurgeHook}, Cdn, SurrogateKeys};
//!
//! struct Fastly {
//!     keys: SurrogateKeys,
//! }
//!
//! impl PurgeHook for Fastly {
//!     fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()> {
//!         let keys = self.keys.purge_keys(&deps);
//!         Box::pin(async move {
//!             // POST https://api.fastly.com/service/{id}/purge with `Surrogate-Key: {keys}`;
//!             // log a failure (the next invalidation purges again).
//!             let _ = keys;
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), matroska_cache::Error> {
//! let cache = MatroskaCache::builder(MemoryBackend::default())
//!     .on_invalidate(purging(Fastly { keys: SurrogateKeys::new(Cdn::Fastly) }))
//!     .build()?;
//! cache.invalidate([dep::id("post", 1)]).await?; // purges "id:post:1" and "matroska-all"
//! # Ok(()) }
//! ```

#[cfg(feature = "purge-clients")]
pub mod clients;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use matroska_cache::Dep;
use tokio::sync::Notify;
use tracing::{error, warn};

/// Purges what depends on invalidated dependencies at a CDN (or anywhere else).
pub trait PurgeHook: Send + Sync + 'static {
    /// Called with the dependencies of one or more invalidations, sorted, each once. It
    /// should log its failures itself: the invalidation does not wait for it, and purging
    /// must be safe to repeat (a failed invalidation is retried, and a transaction commit
    /// invalidates before and after committing).
    fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()>;
}

/// How long [`purging`] gathers invalidations into one purge.
pub const PURGE_WINDOW: Duration = Duration::from_millis(50);

/// The most dependencies [`purging`] keeps waiting for a purge (while the CDN is slow or
/// down); more are dropped, and logged as an error: their pages stay at the edge until
/// their TTL.
pub const MAX_PENDING_PURGES: usize = 100_000;

/// What waits to be purged, and the hook that purges it.
struct Queue {
    pending: Mutex<BTreeSet<Dep>>,
    hook: Box<dyn PurgeHook>,
    started: AtomicBool,
}

/// An invalidation hook that purges through `hook`, one purge at a time: the dependencies
/// of the invalidations of a short window ([`PURGE_WINDOW`]), and of those that came while
/// the previous purge ran, go together, so that a burst of invalidations makes a few API
/// requests instead of one each. At most [`MAX_PENDING_PURGES`] wait. The purges run in a
/// task of the Tokio runtime of the first invalidation; outside a runtime, dependencies
/// wait for the next invalidation inside one.
pub fn purging(hook: impl PurgeHook) -> impl Fn(&[Dep]) + Send + Sync + 'static {
    let queue = Arc::new(Queue {
        pending: Mutex::default(),
        hook: Box::new(hook),
        started: AtomicBool::new(false),
    });
    let wake = Arc::new(Notify::new());
    move |deps: &[Dep]| {
        {
            let mut pending = queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() + deps.len() > MAX_PENDING_PURGES {
                error!(
                    dropped = deps.len(),
                    waiting = pending.len(),
                    "too many dependencies wait to be purged at the CDN; these are not purged"
                );
                return;
            }
            pending.extend(deps.iter().cloned());
        }
        wake.notify_one();
        if !queue.started.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(purge_pending(Arc::downgrade(&queue), Arc::clone(&wake)));
                }
                Err(_) => {
                    queue.started.store(false, Ordering::Release);
                    warn!("an invalidation outside a Tokio runtime: its purge waits for the next one inside one");
                }
            }
        }
    }
}

/// Purges what waits, a window after each wake-up, until the hook is dropped.
async fn purge_pending(queue: Weak<Queue>, wake: Arc<Notify>) {
    loop {
        // A notification sent while no one waits is kept: none is lost.
        wake.notified().await;
        tokio::time::sleep(PURGE_WINDOW).await;
        let Some(queue) = queue.upgrade() else {
            return;
        };
        let deps: Vec<Dep> =
            std::mem::take(&mut *queue.pending.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        if !deps.is_empty() {
            queue.hook.purge(deps).await;
        }
    }
}

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

use std::sync::Arc;

use futures_util::future::BoxFuture;
use matroska_cache::Dep;
use tracing::warn;

/// Purges what depends on invalidated dependencies at a CDN (or anywhere else).
pub trait PurgeHook: Send + Sync + 'static {
    /// Called with the dependencies of each invalidation, sorted, each once; the future runs
    /// in a task of its own. It should log its failures itself: the invalidation does not
    /// wait for it, and purging must be safe to repeat (a failed invalidation is retried,
    /// and a transaction commit invalidates before and after committing).
    fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()>;
}

/// An invalidation hook that spawns `hook.purge` on the current Tokio runtime for every
/// invalidation.
pub fn purging(hook: impl PurgeHook) -> impl Fn(&[Dep]) + Send + Sync + 'static {
    let hook = Arc::new(hook);
    move |deps: &[Dep]| match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(hook.purge(deps.to_vec()));
        }
        Err(_) => warn!(
            ?deps,
            "an invalidation outside a Tokio runtime: nothing purged at the CDN"
        ),
    }
}

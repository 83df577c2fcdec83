//! Per-entry read-through options: [`MatroskaCache::entry`].
//!
//! ```
//! use matroska_cache::{dep, MatroskaCache};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), std::io::Error> {
//! let cache = MatroskaCache::in_memory();
//! let page: String = cache
//!     .entry("home")
//!     .ttl(Duration::from_secs(60))
//!     // Kept 10 minutes past its TTL, returned only if rendering fails meanwhile.
//!     .fail_safe(Duration::from_secs(600))
//!     // Hits after 50 s return at once and re-render in the background.
//!     .refresh_after(Duration::from_secs(50))
//!     .get_or_compute(|| async {
//!         Ok::<_, std::io::Error>(("<h1>Home</h1>".to_owned(), [dep::tag("home")]))
//!     })
//!     .await?;
//! assert_eq!(page, "<h1>Home</h1>");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::MatroskaCache;
use crate::dep::Dep;

/// The TTL of an [`Entry`] that was given none.
pub const DEFAULT_ENTRY_TTL: Duration = Duration::from_secs(5 * 60);

/// How long a read-through entry lives: fresh for `ttl`, due for a refresh after
/// `refresh_after`, kept `fail_safe` past its TTL as a fallback (see [`Entry`]'s methods of
/// those names). An [`Entry`] builds one; a computation can replace its own with
/// [`set_lifetime`](crate::set_lifetime) once it knows better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lifetime {
    /// How long the value is fresh.
    pub ttl: Duration,
    /// When a hit starts a background refresh (only through
    /// [`Entry::refresh_after`]'s `get_or_compute`, whose computation may run in the
    /// background).
    pub refresh_after: Option<Duration>,
    /// How long past its TTL the entry is kept as a fail-safe fallback.
    pub fail_safe: Option<Duration>,
}

impl Lifetime {
    /// Fresh for `ttl`, no refresh-ahead, no fallback window.
    pub fn new(ttl: Duration) -> Lifetime {
        Lifetime {
            ttl,
            refresh_after: None,
            fail_safe: None,
        }
    }

    /// With refresh-ahead after `after`.
    pub fn refresh_after(self, after: Duration) -> Lifetime {
        Lifetime {
            refresh_after: Some(after),
            ..self
        }
    }

    /// With a fail-safe window of `max` past the TTL.
    pub fn fail_safe(self, max: Duration) -> Lifetime {
        Lifetime {
            fail_safe: Some(max),
            ..self
        }
    }

    /// Whether entries carry their [`Freshness`](crate::backend::Freshness).
    pub(crate) fn timed(&self) -> bool {
        self.refresh_after.is_some() || self.fail_safe.is_some()
    }
}

/// An entry without refresh-ahead (the type parameter of [`Entry`]).
#[derive(Debug)]
pub struct OnMiss;

/// An entry with refresh-ahead: its computation may run in a background task, so it must be
/// `'static` (the type parameter of [`Entry`]).
#[derive(Debug)]
pub struct RefreshAhead;

/// Read-through of one key with per-entry options, from [`MatroskaCache::entry`]: set any of
/// [`ttl`](Entry::ttl), [`fail_safe`](Entry::fail_safe) and
/// [`refresh_after`](Entry::refresh_after), then call
/// [`get_or_compute`](Entry::get_or_compute).
///
/// Every guarantee of [`MatroskaCache::get_or_compute`] holds (it is
/// `entry(key).ttl(ttl).get_or_compute(compute)`): stale-set fencing, single flight, leases,
/// nested dependencies. **An invalidated, deleted or replaced entry is never returned**,
/// fail-safe or not: invalidation deletes the entry with its fallback window.
#[derive(Debug)]
#[must_use = "an entry does nothing until get_or_compute is awaited"]
pub struct Entry<'c, Mode = OnMiss> {
    cache: &'c MatroskaCache,
    key: &'c str,
    options: Lifetime,
    mode: PhantomData<Mode>,
}

impl<'c> Entry<'c, OnMiss> {
    pub(crate) fn new(cache: &'c MatroskaCache, key: &'c str) -> Self {
        Entry {
            cache,
            key,
            options: Lifetime::new(DEFAULT_ENTRY_TTL),
            mode: PhantomData,
        }
    }

    /// **Refresh-ahead:** a hit on an entry stored more than `after` ago (and still within
    /// its TTL) returns the value at once and starts one recomputation in a background task:
    /// one per key in this process, none while another process holds the key's lease, and
    /// stored through the same fence as any read-through value. A refresh that fails (or is
    /// fenced out) leaves the entry as it was. An `after` at or beyond the TTL never
    /// refreshes.
    ///
    /// Costs: the entry's freshness (40 bytes) is stored with it, and a due hit spawns a
    /// task. The computation must be `'static` (it may outlive this call), so it cannot
    /// borrow from the caller: move clones into it.
    ///
    /// Needs a Tokio runtime; outside one, a due hit returns the value without refreshing.
    pub fn refresh_after(self, after: Duration) -> Entry<'c, RefreshAhead> {
        Entry {
            cache: self.cache,
            key: self.key,
            options: self.options.refresh_after(after),
            mode: PhantomData,
        }
    }

    /// The value under the key; on a miss (or past the TTL), computes it and stores it. See
    /// [`MatroskaCache::get_or_compute`], with this entry's options.
    pub async fn get_or_compute<T, E, D, F, Fut>(self, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
        E: Send,
    {
        self.get_or_compute_failing_on(compute, |_| true).await
    }

    /// [`get_or_compute`](Self::get_or_compute) where only the errors `failed` accepts are
    /// failures that return the [fail-safe](Entry::fail_safe) fallback; others (a value the
    /// computation chose not to store, a "not found") reach the caller as they are.
    pub async fn get_or_compute_failing_on<T, E, D, F, Fut>(
        self,
        compute: F,
        failed: fn(&E) -> bool,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
        E: Send,
    {
        self.cache
            .read_through(self.key, self.options, compute, |_, _| {}, failed)
            .await
    }
}

impl<'c> Entry<'c, RefreshAhead> {
    /// The value under the key; on a miss (or past the TTL), computes it and stores it; on a
    /// hit due for a refresh, returns it and recomputes it in the background. See
    /// [`MatroskaCache::get_or_compute`], with this entry's options.
    pub async fn get_or_compute<T, E, D, F, Fut>(self, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        D: IntoIterator<Item = Dep> + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, D), E>> + Send + 'static,
        E: Send + 'static,
    {
        self.get_or_compute_failing_on(compute, |_| true).await
    }

    /// [`get_or_compute`](Self::get_or_compute) where only the errors `failed` accepts are
    /// failures that return the [fail-safe](Entry::fail_safe) fallback; others (a value the
    /// computation chose not to store, a "not found") reach the caller as they are.
    pub async fn get_or_compute_failing_on<T, E, D, F, Fut>(
        self,
        compute: F,
        failed: fn(&E) -> bool,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        D: IntoIterator<Item = Dep> + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, D), E>> + Send + 'static,
        E: Send + 'static,
    {
        let (key, options) = (self.key, self.options);
        let refresh = move |cache: &MatroskaCache, compute| cache.refresh(key, options, compute);
        self.cache
            .read_through(key, options, compute, refresh, failed)
            .await
    }
}

impl<'c, Mode> Entry<'c, Mode> {
    /// How long the value is fresh: a read after it misses (unless
    /// [`fail_safe`](Entry::fail_safe) returns it because computing failed). Default
    /// [`DEFAULT_ENTRY_TTL`]; jittered like every TTL if the cache
    /// [spreads TTLs](crate::MatroskaCacheBuilder::ttl_jitter).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// **Fail-safe:** the entry is kept up to `max` beyond its TTL as a fallback. After the
    /// TTL, a plain [`get`](MatroskaCache::get) misses and read-through computes as usual;
    /// only if the computation returns an error is the expired value returned (counted in
    /// [`Stats::fail_safe_hits`](crate::Stats::fail_safe_hits) and logged at warn level).
    ///
    /// Before returning it, the entry is read again: one invalidated, deleted or replaced
    /// while the computation ran is not returned (a replacement is returned instead). If
    /// that read fails too (Redis down), the fallback read at the start of the call is
    /// returned: it was current then, unless this process's own failed invalidation of one
    /// of its dependencies waits for a retry, in which case the error is returned.
    ///
    /// Costs: Redis (or the memory backend) keeps the entry `max` longer, and the entry's
    /// freshness (40 bytes) is stored with it.
    pub fn fail_safe(mut self, max: Duration) -> Self {
        self.options = self.options.fail_safe(max);
        self
    }
}

impl MatroskaCache {
    /// Read-through of `key` with per-entry options: [`ttl`](Entry::ttl),
    /// [`fail_safe`](Entry::fail_safe), [`refresh_after`](Entry::refresh_after), then
    /// [`get_or_compute`](Entry::get_or_compute). See the [module documentation](crate::entry).
    pub fn entry<'c>(&'c self, key: &'c str) -> Entry<'c> {
        Entry::new(self, key)
    }
}

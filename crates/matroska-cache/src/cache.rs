//! [`MatroskaCache`]: the front door.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, trace, warn};

use crate::backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, DynBackend, Fenced, PruneReport, Ticket, Want};
use crate::codec::Encoded;
use crate::dep::{self, Dep};
use crate::detach;
use crate::error::{Error, Result};
use crate::flight::{Flights, Turns};
use crate::key;
use crate::recovery::Recovery;
use crate::stats::{Counter, Counters, Op, Stats};
use crate::ttl;

/// A cache whose entries declare what they were built from.
///
/// `put` stores a value with its dependencies; `invalidate` drops every entry that depends on
/// any of the given dependencies, for every process that shares the backend. Cheap to clone
/// (clones share the backend and the counters); `Send + Sync`; every future it returns is
/// `Send`.
///
/// ```
/// use matroska_cache::{dep, MatroskaCache};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), matroska_cache::Error> {
/// let cache = MatroskaCache::in_memory();
/// let ttl = Duration::from_secs(60);
/// cache.put("article:1:html", "<h1>Hello</h1>", [dep::id("article", 1)], ttl).await?;
/// assert_eq!(cache.get::<String>("article:1:html").await?.as_deref(), Some("<h1>Hello</h1>"));
///
/// assert_eq!(cache.invalidate([dep::id("article", 1)]).await?, 1);
/// assert_eq!(cache.get::<String>("article:1:html").await?, None);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MatroskaCache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) counters: Counters,
    pub(crate) flights: Flights,
    /// Single flight when the cache cannot be read.
    pub(crate) turns: Turns,
    pub(crate) lease_timeout: Duration,
    pub(crate) on_invalidate: Vec<InvalidationHook>,
    /// TTLs are spread by up to this fraction either way.
    ttl_jitter: f64,
    /// Failed invalidations waiting for a retry.
    pub(crate) recovery: Recovery,
}

/// A function called with the dependencies of every invalidation this cache runs (see
/// [`MatroskaCacheBuilder::on_invalidate`]).
pub type InvalidationHook = Arc<dyn Fn(&[Dep]) + Send + Sync>;

/// Configures a [`MatroskaCache`].
#[must_use]
pub struct MatroskaCacheBuilder {
    backend: Arc<dyn DynBackend>,
    lease_timeout: Duration,
    on_invalidate: Vec<InvalidationHook>,
    ttl_jitter: f64,
}

impl std::fmt::Debug for MatroskaCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatroskaCacheBuilder")
            .field("lease_timeout", &self.lease_timeout)
            .field("on_invalidate", &self.on_invalidate.len())
            .field("ttl_jitter", &self.ttl_jitter)
            .finish_non_exhaustive()
    }
}

impl MatroskaCacheBuilder {
    /// How long one caller may hold the lease on computing a key in
    /// [`get_or_compute`](MatroskaCache::get_or_compute) (default [`DEFAULT_LEASE_TIMEOUT`]).
    /// Other processes wait for its value for up to half this long, then compute themselves
    /// (still fenced); if the holder dies, the key is free again after this long.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// Calls `hook` with the dependencies of every invalidation through this cache (and its
    /// clones, transaction commits included) once the backend has run it, whether it
    /// succeeded or failed: a failed invalidation may have dropped some entries, and what a
    /// hook does with the news (purging a CDN, say) must be safe to repeat, since the caller
    /// retries (and the cache retries a transiently failed one itself, calling the hook
    /// again when it succeeds). Each call sees the invalidation's dependencies sorted, each
    /// once. The hook
    /// runs on the invalidation's task: it must not block; spawn slow work.
    ///
    /// Invalidations run by other processes sharing the backend call their own hooks, not
    /// this one.
    ///
    /// ```
    /// use matroska_cache::{dep, Dep, MatroskaCache, MemoryBackend};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), matroska_cache::Error> {
    /// let seen: Arc<Mutex<Vec<Dep>>> = Arc::default();
    /// let log = Arc::clone(&seen);
    /// let cache = MatroskaCache::builder(MemoryBackend::default())
    ///     .on_invalidate(move |deps| log.lock().unwrap().extend_from_slice(deps))
    ///     .build()?;
    /// cache.invalidate([dep::id("article", 1)]).await?;
    /// assert_eq!(*seen.lock().unwrap(), [dep::id("article", 1)]);
    /// # Ok(()) }
    /// ```
    pub fn on_invalidate(mut self, hook: impl Fn(&[Dep]) + Send + Sync + 'static) -> Self {
        self.on_invalidate.push(Arc::new(hook));
        self
    }

    /// Spreads every entry's TTL by a random amount of up to `fraction` of it either way
    /// (`0.1`: a 60 s TTL becomes 54 to 66 s), so that entries written together (a deploy's
    /// cold start, a burst of reads) do not all expire, and recompute, together. Default 0;
    /// `fraction` must be at least 0 and below 1. The result stays within the TTL rule
    /// (at least 1 ms, at most [`MAX_TTL`](crate::MAX_TTL)).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction;
        self
    }

    /// The cache; a zero lease timeout or a jitter outside `0..1` is an
    /// [`Error::InvalidConfig`].
    pub fn build(self) -> Result<MatroskaCache> {
        if self.lease_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the lease timeout must be above zero".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.ttl_jitter) {
            return Err(Error::InvalidConfig(
                "the TTL jitter must be at least 0 and below 1".into(),
            ));
        }
        Ok(MatroskaCache {
            inner: Arc::new(Inner {
                counters: Counters::new(self.backend.label()),
                backend: self.backend,
                flights: Flights::default(),
                turns: Turns::default(),
                lease_timeout: self.lease_timeout,
                on_invalidate: self.on_invalidate,
                ttl_jitter: self.ttl_jitter,
                recovery: Recovery::default(),
            }),
        })
    }
}

/// How long a process may hold the lease on computing one key, by default.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for MatroskaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatroskaCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MatroskaCache {
    /// A cache on the given backend, with default settings.
    pub fn new(backend: impl Backend) -> Self {
        MatroskaCache::builder(backend)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for a cache on the given backend, to change the read-through settings.
    pub fn builder(backend: impl Backend) -> MatroskaCacheBuilder {
        MatroskaCacheBuilder {
            backend: Arc::new(backend),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            on_invalidate: Vec::new(),
            ttl_jitter: 0.0,
        }
    }

    /// An in-process cache with the default bound
    /// ([`DEFAULT_MAX_WEIGHT`](crate::backend::memory::DEFAULT_MAX_WEIGHT) bytes).
    pub fn in_memory() -> Self {
        MatroskaCache::new(MemoryBackend::default())
    }

    /// A cache in Redis at `url`, with every key under `prefix`, with the default settings of
    /// [`RedisBackend::builder`].
    ///
    /// Fails promptly if the URL is malformed, the server unreachable, or its eviction policy
    /// could lose invalidations.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn redis(url: &str, prefix: &str) -> Result<Self> {
        Ok(MatroskaCache::new(
            RedisBackend::builder(url, prefix).build().await?,
        ))
    }

    /// A cache on the Redis Cluster reachable at any of `nodes`, with every key under
    /// `prefix`, spread over the masters in [`DEFAULT_CLUSTER_SHARDS`] shards, with the
    /// default settings of [`RedisBackend::cluster_builder`].
    ///
    /// Everything works as on one server, with the same guarantees (see `docs/cluster.md`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), matroska_cache::Error> {
    /// use matroska_cache::MatroskaCache;
    /// let nodes = ["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"];
    /// let cache = MatroskaCache::redis_cluster(nodes, "cache").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`DEFAULT_CLUSTER_SHARDS`]: crate::backend::redis::DEFAULT_CLUSTER_SHARDS
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn redis_cluster(
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
        prefix: &str,
    ) -> Result<Self> {
        Ok(MatroskaCache::new(
            RedisBackend::cluster_builder(nodes, prefix).build().await?,
        ))
    }

    /// Counts an error before passing it on.
    pub(crate) fn count<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            self.inner.counters.add(Counter::Errors, 1);
            self.count_fast_failure(error);
        }
        result
    }

    /// The TTL an entry is stored with: checked ([`ttl::check`]), then jittered.
    pub(crate) fn stored_ttl(&self, ttl: Duration) -> Result<Duration> {
        ttl::check(ttl).map(|ttl| ttl::jittered(ttl, self.inner.ttl_jitter))
    }

    /// Counts a call an open circuit breaker failed at once.
    pub(crate) fn count_fast_failure(&self, error: &Error) {
        if matches!(error, Error::Unavailable { .. }) {
            self.inner.counters.add(Counter::FastFailures, 1);
        }
    }

    /// A ticket for [`put_fenced`](Self::put_fenced): take it *before* reading the data the
    /// value is computed from.
    pub async fn ticket(&self) -> Result<Ticket> {
        let begun = self.inner.backend.begin("", None, Want::fresh()).await;
        let (ticket, _) = self.count(begun)?;
        Ok(ticket)
    }

    /// Stores `value` like [`put`](Self::put), but only if none of `deps` was invalidated
    /// after `ticket` was taken (nor is being invalidated now); returns whether it stored.
    ///
    /// This is the stale-set fence without a closure: take a ticket, read the source of
    /// truth, compute, then `put_fenced`. A value computed from data that an invalidation has
    /// since replaced is refused instead of outliving that invalidation.
    ///
    /// ```
    /// use matroska_cache::{dep, MatroskaCache};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), matroska_cache::Error> {
    /// let cache = MatroskaCache::in_memory();
    /// let ticket = cache.ticket().await?;
    /// let title = "Old title"; // read from the database
    /// // ...meanwhile a writer changes the article and invalidates it:
    /// cache.invalidate([dep::id("article", 1)]).await?;
    /// let stored = cache
    ///     .put_fenced("title:1", title, [dep::id("article", 1)], Duration::from_secs(60), &ticket)
    ///     .await?;
    /// assert!(!stored); // the old title is not cached
    /// # Ok(()) }
    /// ```
    pub async fn put_fenced<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        deps: impl IntoIterator<Item = Dep>,
        ttl: Duration,
        ticket: &Ticket,
    ) -> Result<bool> {
        let _timer = self.inner.counters.time(Op::Put);
        let ttl = self.count(self.stored_ttl(ttl))?;
        self.count(key::check(key))?;
        let encoded = self.count(Encoded::encode(key, value))?;
        let deps = dep::sorted_unique(deps);
        let backend = &self.inner.backend;
        let outcome = self.count(
            backend
                .put_fenced(key, encoded, &deps, ttl, *ticket, None)
                .await,
        )?;
        Ok(self.record_fenced(key, &deps, outcome))
    }

    /// Counts and logs the outcome of a fenced put; returns whether it stored.
    pub(crate) fn record_fenced(&self, key: &str, deps: &[Dep], outcome: Fenced) -> bool {
        let counters = &self.inner.counters;
        match outcome {
            Fenced::Stored => {
                counters.add(Counter::Puts, 1);
                debug!(key, deps = ?deps, "cache put (fenced)");
                true
            }
            Fenced::Invalidated | Fenced::Expired => {
                counters.add(Counter::Fenced, 1);
                debug!(key, deps = ?deps, ?outcome, "not stored: a dependency was invalidated since the computation began, or it took too long");
                false
            }
        }
    }

    /// Stores `value` under `key` for `ttl`, depending on `deps`.
    ///
    /// Replaces any previous entry under `key` together with its dependencies: an old
    /// dependency no longer drops the new value. Strings are stored as they are, other values
    /// as JSON. A `ttl` of zero or above [`MAX_TTL`](crate::MAX_TTL) is [`Error::InvalidTtl`];
    /// a key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) is [`Error::KeyTooLong`].
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        deps: impl IntoIterator<Item = Dep>,
        ttl: Duration,
    ) -> Result<()> {
        let _timer = self.inner.counters.time(Op::Put);
        let ttl = self.count(self.stored_ttl(ttl))?;
        self.count(key::check(key))?;
        let encoded = self.count(Encoded::encode(key, value))?;
        let deps = dep::sorted_unique(deps);
        let size = encoded.bytes.len();
        self.count(self.inner.backend.put(key, encoded, &deps, ttl).await)?;
        self.inner.counters.add(Counter::Puts, 1);
        debug!(key, deps = ?deps, ttl = ?ttl, size, "cache put");
        Ok(())
    }

    /// The value under `key` as a `T`, or `None` if there is none.
    ///
    /// A stored value that does not decode as `T` is [`Error::Decode`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let _timer = self.inner.counters.time(Op::Get);
        let found = self.count(self.read(key).await)?;
        let counters = &self.inner.counters;
        match found {
            Some(encoded) => {
                counters.add(Counter::Hits, 1);
                trace!(key, "cache hit");
                self.count(encoded.decode(key).map(Some))
            }
            None => {
                counters.add(Counter::Misses, 1);
                trace!(key, "cache miss");
                Ok(None)
            }
        }
    }

    /// The values under `keys` as `T`s, in key order: `None` where there is none. One round
    /// trip on Redis.
    ///
    /// A stored value that does not decode as `T` is [`Error::Decode`] for the whole call.
    ///
    /// ```
    /// use matroska_cache::MatroskaCache;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), matroska_cache::Error> {
    /// let cache = MatroskaCache::in_memory();
    /// cache.put("a", &1, [], Duration::from_secs(60)).await?;
    /// cache.put("c", &3, [], Duration::from_secs(60)).await?;
    /// let found: Vec<Option<u32>> = cache.get_many(["a", "b", "c"]).await?;
    /// assert_eq!(found, [Some(1), None, Some(3)]);
    /// # Ok(()) }
    /// ```
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Vec<Option<T>>> {
        let _timer = self.inner.counters.time(Op::Get);
        let keys: Vec<_> = keys.into_iter().collect();
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let found = if self.inner.recovery.is_empty() {
            let found = self.count(self.inner.backend.get_many(&keys).await)?;
            found
                .into_iter()
                .map(|f| f.filter(Encoded::is_fresh))
                .collect()
        } else {
            // Failed invalidations wait for a retry: each entry's dependencies are checked.
            let mut found = Vec::with_capacity(keys.len());
            for key in &keys {
                found.push(self.count(self.read(key).await)?);
            }
            found
        };
        let counters = &self.inner.counters;
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        counters.add(Counter::Hits, hits);
        counters.add(Counter::Misses, keys.len() as u64 - hits);
        trace!(keys = keys.len(), hits, "cache get_many");
        let decoded = keys
            .iter()
            .zip(found)
            .map(|(key, found)| found.map(|encoded| encoded.decode(key)).transpose())
            .collect();
        self.count(decoded)
    }

    /// Whether a value is stored under `key`.
    pub async fn has(&self, key: &str) -> Result<bool> {
        if !self.inner.recovery.is_empty() {
            return Ok(self.count(self.read(key).await)?.is_some());
        }
        self.count(self.inner.backend.has(key).await)
    }

    /// The entry under `key`, as this process may read it: absent if it depends on a
    /// dependency whose failed invalidation waits for a retry.
    /// An entry past its TTL (kept as a fail-safe fallback) is absent too.
    pub(crate) async fn read(&self, key: &str) -> Result<Option<Encoded>> {
        let entry = if self.inner.recovery.is_empty() {
            self.inner.backend.get(key).await?
        } else {
            self.read_with_deps(key).await?.map(|(encoded, _)| encoded)
        };
        Ok(entry.filter(Encoded::is_fresh))
    }

    /// The entry under `key` with its dependencies, whatever its age, as this process may
    /// read it: absent if it depends on a dependency whose failed invalidation waits for a
    /// retry.
    pub(crate) async fn read_with_deps(&self, key: &str) -> Result<Option<(Encoded, Vec<Dep>)>> {
        let entry = self.inner.backend.get_with_deps(key).await?;
        Ok(entry.filter(|(_, deps)| !self.inner.recovery.any_pending(deps)))
    }

    /// How many dependencies of failed invalidations wait for a retry in this process
    /// (see [`invalidate`](Self::invalidate)).
    pub fn pending_invalidations(&self) -> usize {
        self.inner.recovery.len()
    }

    /// Removes the entry under `key`; returns whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let existed = self.count(self.inner.backend.delete(key).await)?;
        debug!(key, existed, "cache delete");
        Ok(existed)
    }

    /// Drops every entry that depends on any of `deps`; returns how many entries were dropped
    /// (each once, however many of `deps` it had).
    ///
    /// When it returns, no entry that depended on `deps` and was stored before the call began
    /// is readable, in this process or any other sharing the backend. Unknown dependencies
    /// drop nothing. `deps` may be given by value or by reference (`[Dep; N]`, `&[Dep]`,
    /// `&Vec<Dep>`, an iterator of either).
    ///
    /// Once polled, the invalidation runs to the end in a task of its own (it needs a Tokio
    /// runtime for that; outside one it runs in place): dropping this future, for example
    /// under a timeout or when a web client disconnects, does not leave some dependents
    /// readable.
    ///
    /// An invalidation that fails for a transient reason ([`Error::is_transient`]: Redis
    /// timed out, hung or unreachable) returns its error, and is also retried in the
    /// background, with backoff, until it succeeds ([`crate::recovery`]); meanwhile this
    /// process reads the entries of its dependencies as absent.
    pub async fn invalidate<D: Borrow<Dep>>(
        &self,
        deps: impl IntoIterator<Item = D>,
    ) -> Result<u64> {
        let _timer = self.inner.counters.time(Op::Invalidate);
        let deps = dep::sorted_unique(deps.into_iter().map(|d| d.borrow().clone()));
        let cache = self.clone();
        let outcome = detach::run_to_completion(async move {
            let began = cache.inner.recovery.begin();
            let dropped = cache.inner.backend.invalidate(&deps).await;
            for hook in &cache.inner.on_invalidate {
                hook(&deps);
            }
            let dropped = match dropped {
                Ok(dropped) => {
                    cache.inner.recovery.succeeded(&deps, began);
                    dropped
                }
                Err(error) => {
                    if error.is_transient() {
                        // Retried in the background; meanwhile this process reads these
                        // dependencies' entries as gone.
                        cache.inner.recovery.enqueue(&cache.inner, &deps, began);
                        warn!(%error, deps = deps.len(), "an invalidation failed; it is retried until it succeeds");
                    }
                    return Err(error);
                }
            };
            let counters = &cache.inner.counters;
            counters.add(Counter::Invalidations, 1);
            counters.add(Counter::Dropped, dropped);
            debug!(deps = ?deps, dropped, "cache invalidate");
            Ok(dropped)
        })
        .await;
        self.count(outcome.and_then(|dropped| dropped))
    }

    /// The dependencies the entry under `key` was stored with, or `None` if there is none.
    pub async fn deps(&self, key: &str) -> Result<Option<Vec<Dep>>> {
        self.count(self.inner.backend.deps(key).await)
    }

    /// Reclaims dependency-index members whose entries are gone (expired, evicted, deleted,
    /// replaced or invalidated through another dependency), in bounded batches.
    ///
    /// The index stays correct without it; pruning bounds its size. Run it periodically (the
    /// `matroska prune` command does the same from a shell).
    pub async fn prune(&self) -> Result<PruneReport> {
        self.count(self.inner.backend.prune().await)
    }

    /// This cache's counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.counters.snapshot();
        stats.breaker_openings = self.inner.backend.breaker_openings();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}
    fn is_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn futures_are_send() {
        is_send_sync_clone::<MatroskaCache>();
        let cache = MatroskaCache::in_memory();
        let d = || [crate::dep::tag("t")];
        is_send(&cache.put("k", &1, d(), Duration::from_secs(1)));
        is_send(&cache.get::<u32>("k"));
        is_send(&cache.has("k"));
        is_send(&cache.get_many::<u32>(["k"]));
        is_send(&cache.delete("k"));
        is_send(&cache.invalidate(d()));
        is_send(&cache.deps("k"));
        is_send(&cache.prune());
        is_send(&cache.ticket());
        is_send(
            &cache.get_or_compute("k", Duration::from_secs(1), || async {
                Ok::<_, std::io::Error>((1u32, d()))
            }),
        );
        #[cfg(feature = "redis")]
        is_send(&MatroskaCache::redis("redis://127.0.0.1/", "p"));
    }
}

//! Read-through: [`MatroskaCache::get_or_compute`] without stale data.
//!
//! A miss runs the computation and stores its result, with four guarantees:
//!
//! - **Stale-set fencing.** A ticket is taken before the computation starts; the result is
//!   stored only if none of its dependencies (including those discovered while computing) was
//!   invalidated after that, or is being invalidated at the moment of the store. A value
//!   computed from data older than an invalidation therefore never outlives it.
//! - **Single flight.** Concurrent misses of one key in this process run one computation; the
//!   others wait for its result. If the result was not stored (fenced out, failed, cancelled),
//!   each of them computes by itself, at once and in parallel, rather than return data that
//!   may predate an invalidation it saw, or queue behind another leader. When the cache
//!   cannot be read at all (Redis down, hung, its breaker open), the callers of a key take
//!   turns instead: one computation at a time, its value handed only to the callers that
//!   were already waiting when it began, so the database sees one query per key however
//!   many requests arrive.
//! - **Distributed leases.** Across processes (Redis), or caches sharing one memory backend,
//!   one caller per key holds the lease and computes; the others poll for its value. A holder
//!   that dies frees the key after the lease timeout; one that is cancelled frees it at once.
//!   The caller that wins the lease re-checks the cache in the same round trip.
//!
//! **The bound.** A call runs its computation at most once. Before that it waits for at most
//! one other computation of the key in this process (the leader it follows), and, as a leader,
//! for at most half the lease timeout for a holder in another process. However fast the key's
//! dependencies are invalidated, no caller waits for a queue of computations.
//!
//! **Cycles.** A `get_or_compute` of a key inside that same key's computation (directly or
//! through other keys; the task-local chain of computations knows) would wait for itself
//! forever. It is detected, logged, counted as a fault, and computed without the cache
//! instead. A computation that awaits a task it spawned, which then asks for the same key, is
//! not detected: task-locals do not follow spawned tasks.
//! - **Russian dolls.** A `get_or_compute` (hit or miss) inside another's computation adds its
//!   dependencies to the outer entry; [`depends_on`] adds any dependency explicitly. One that
//!   fails still adds what it declared before failing: an outer value built without it (a
//!   fallback, a "not found" page) was still built from what it read.
//!
//! Cache faults never fail the call: if the cache cannot be read (Redis down, a value that no
//! longer decodes), the value is computed, logged and counted in
//! [`Stats::faults`](crate::Stats::faults). The computation's own error reaches the caller
//! unchanged and nothing is stored.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::backend::{EntryWithDeps, Fenced, Lease, Ticket};
use crate::cache::MatroskaCache;
use crate::codec::Encoded;
use crate::dep::{self, Dep};
use crate::entry::Lifetime;
use crate::error::Error;
use crate::flight::{Flight, Role, Shared};
use crate::key;
use crate::stats::{Counter, Op};
use crate::ttl::{self, Age, Freshness, Want};

/// A computation running in a task: what it has collected, and the one it runs inside.
struct Computation {
    /// The cache (its shared state's address) and key being computed.
    cache: usize,
    key: String,
    /// The dependencies declared so far by it and by nested calls.
    deps: Mutex<Vec<Dep>>,
    /// The lifetime it set for its entry ([`set_lifetime`]).
    lifetime: Mutex<Option<Lifetime>>,
    outer: Option<Arc<Computation>>,
}

tokio::task_local! {
    /// The innermost computation running in this task.
    static COMPUTATION: Arc<Computation>;
}

/// Adds dependencies to the entry whose computation is running in this task (the innermost
/// [`get_or_compute`](MatroskaCache::get_or_compute)); returns `false`, and does nothing,
/// outside any computation.
///
/// Use it for what a computation reads without going through the cache, such as a settings
/// row. Dependencies are collected per task: a task the computation spawns does not add to it.
///
/// ```
/// use matroska_cache::{dep, depends_on, MatroskaCache};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = MatroskaCache::in_memory();
/// let page: String = cache
///     .get_or_compute("home", Duration::from_secs(60), || async {
///         depends_on([dep::tag("site-settings")]);
///         Ok::<_, std::io::Error>(("<h1>Home</h1>".to_owned(), []))
///     })
///     .await
///     .unwrap();
/// assert_eq!(cache.invalidate([dep::tag("site-settings")]).await.unwrap(), 1);
/// # }
/// ```
pub fn depends_on(deps: impl IntoIterator<Item = Dep>) -> bool {
    COMPUTATION
        .try_with(|computation| {
            computation
                .deps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(deps)
        })
        .is_ok()
}

/// Sets how long the entry whose computation runs in this task lives (the innermost
/// [`get_or_compute`](MatroskaCache::get_or_compute), or [`Entry`](crate::Entry)), in place
/// of the lifetime the call gave; returns `false`, and does nothing, outside any computation.
///
/// For computations that learn how long their result is good for: a token's expiry, an
/// HTTP response's `Cache-Control`. A refresh-ahead setting takes effect only for entries
/// read through [`Entry::refresh_after`](crate::Entry::refresh_after) (whose computation may
/// run in the background). An invalid TTL stores nothing (a fault, logged and counted).
///
/// ```
/// use matroska_cache::{entry::Lifetime, set_lifetime, MatroskaCache};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = MatroskaCache::in_memory();
/// let token: String = cache
///     .get_or_compute("api-token", Duration::from_secs(3600), || async {
///         let (token, expires_in) = ("t0k3n".to_owned(), Duration::from_secs(300));
///         set_lifetime(Lifetime::new(expires_in));
///         Ok::<_, std::io::Error>((token, []))
///     })
///     .await
///     .unwrap();
/// # let _ = token;
/// # }
/// ```
pub fn set_lifetime(lifetime: Lifetime) -> bool {
    COMPUTATION
        .try_with(|innermost| {
            // The innermost computation of an entry (not a `with_dependencies` scope).
            let mut next = Some(innermost);
            while let Some(computation) = next {
                if computation.cache != 0 {
                    *computation
                        .lifetime
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(lifetime);
                    return true;
                }
                next = computation.outer.as_ref();
            }
            false
        })
        .unwrap_or(false)
}

/// Runs `work` and returns its output with the dependencies it declared: through
/// [`depends_on`] and through every [`get_or_compute`](MatroskaCache::get_or_compute) inside
/// it, hit or miss. They are passed on to the computation this runs inside, if any, as if
/// `work` had declared them there.
///
/// For layers that store what they computed themselves and need its dependencies, such as
/// an HTTP response cache writing them into a CDN's surrogate-key header.
///
/// ```
/// use matroska_cache::{dep, depends_on, with_dependencies};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (answer, deps) = with_dependencies(async {
///     depends_on([dep::id("article", 1)]);
///     42
/// })
/// .await;
/// assert_eq!((answer, deps), (42, vec![dep::id("article", 1)]));
/// # }
/// ```
pub async fn with_dependencies<F: Future>(work: F) -> (F::Output, Vec<Dep>) {
    let computation = Arc::new(Computation {
        // No cache has this address: the scope is never taken for a key's own computation
        // (see `is_computing`).
        cache: 0,
        key: String::new(),
        deps: Mutex::default(),
        lifetime: Mutex::default(),
        outer: COMPUTATION.try_with(Arc::clone).ok(),
    });
    let output = COMPUTATION.scope(Arc::clone(&computation), work).await;
    let declared = std::mem::take(
        &mut *computation
            .deps
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let deps = dep::sorted_unique(declared);
    depends_on(deps.iter().cloned());
    (output, deps)
}

/// What a computation returned, with what it declared.
struct Computed<T> {
    value: T,
    deps: Vec<Dep>,
    lifetime: Option<Lifetime>,
}

/// What a lookup found.
enum Lookup<T> {
    /// A value and its dependencies, and how old it is (a [`Age::Stale`] one is only a
    /// fail-safe fallback).
    Hit(T, Vec<Dep>, Age),
    Miss,
    /// The cache could not be read.
    Fault,
}

/// An expired value kept for fail-safe: returned only if computing fails with an error
/// that `failed` accepts (`#[cached]` tells a failure from a value it does not store).
struct Fallback<T, E> {
    fallback: Option<(T, Vec<Dep>)>,
    failed: fn(&E) -> bool,
}

impl<T, E> Fallback<T, E> {
    fn none() -> Self {
        Fallback {
            fallback: None,
            failed: |_| false,
        }
    }
}

/// How a computation's result is stored.
struct Storing {
    /// The TTL the entry is fresh for (checked and jittered).
    ttl: Duration,
    options: Lifetime,
}

impl Storing {
    /// How long the backend keeps the entry: its TTL plus the fail-safe window.
    fn kept_for(&self) -> Duration {
        let window = self.options.fail_safe.unwrap_or_default();
        self.ttl.saturating_add(window).min(crate::ttl::MAX_TTL)
    }

    /// The value as stored: with its freshness if it has a window or refreshes.
    fn encode<T: Serialize>(&self, key: &str, value: &T) -> crate::Result<Encoded> {
        let encoded = Encoded::encode(key, value)?;
        let freshness = self
            .options
            .timed()
            .then(|| Freshness::starting_now(self.ttl, self.options.refresh_after));
        Ok(encoded.with_freshness(freshness))
    }
}

/// Whether a computation is a caller's (on a miss) or a background refresh.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Miss,
    Refresh,
}

impl MatroskaCache {
    /// The value under `key`; on a miss, computes it, stores it with its dependencies for
    /// `ttl`, and returns it.
    ///
    /// `compute` returns the value and what it depends on, or the caller's own error, which
    /// is returned unchanged (and nothing is stored). A value whose dependencies were
    /// invalidated while it was computed is returned but not stored. Concurrent misses of one
    /// key compute once, in this process and (on Redis) across processes. Nested calls add
    /// their dependencies to the outer entry. Cache faults (including an invalid `ttl` and a
    /// key asked for inside its own computation) are logged and counted, never returned: the
    /// value is computed instead. See the [module documentation](self).
    ///
    /// This is `entry(key).ttl(ttl).get_or_compute(compute)`; [`entry`](Self::entry) adds
    /// fail-safe and refresh-ahead.
    ///
    /// ```
    /// use matroska_cache::{dep, Dep, MatroskaCache};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), std::io::Error> {
    /// let cache = MatroskaCache::in_memory();
    /// let load = || async {
    ///     let ids = vec![1, 2]; // from the database
    ///     let deps: Vec<Dep> = ids.iter().map(|id| dep::id("article", id)).collect();
    ///     Ok::<_, std::io::Error>((ids, deps))
    /// };
    /// let ttl = Duration::from_secs(60);
    /// let ids: Vec<u32> = cache.get_or_compute("article-ids", ttl, load).await?; // computed
    /// let ids: Vec<u32> = cache.get_or_compute("article-ids", ttl, load).await?; // cached
    /// assert_eq!(ids, [1, 2]);
    /// # Ok(()) }
    /// ```
    pub async fn get_or_compute<T, E, D, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
        E: Send,
    {
        self.entry(key).ttl(ttl).get_or_compute(compute).await
    }

    /// Read-through with `options`; `refresh` is handed the computation on a hit due for a
    /// refresh (and may drop it); only errors that `failed` accepts return a fail-safe
    /// fallback.
    pub(crate) async fn read_through<T, E, D, F, Fut>(
        &self,
        key: &str,
        options: Lifetime,
        compute: F,
        refresh: impl FnOnce(&MatroskaCache, F),
        failed: fn(&E) -> bool,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
        E: Send,
    {
        let storing = match self
            .stored_ttl(options.ttl)
            .and_then(|ttl| key::check(key).map(|()| ttl))
        {
            Ok(ttl) => Storing { ttl, options },
            // Like `put`, an invalid TTL or key is refused; here that means the value is
            // returned but not stored (and the cache is not read for a value it could not
            // renew).
            Err(error) => {
                self.fault(key, &error);
                return self.compute_uncached(key, compute).await;
            }
        };
        if self.is_computing(key) {
            // Waiting for our own flight (or lease) would never end.
            self.inner.counters.add(Counter::Faults, 1);
            warn!(
                key,
                "get_or_compute of a key inside its own computation (a cycle); computing it without the cache"
            );
            return self.compute_uncached(key, compute).await;
        }
        let mut fallback = None;
        match self.lookup::<T>(key).await {
            Lookup::Hit(value, deps, Age::Fresh) => {
                depends_on(deps);
                return Ok(value);
            }
            Lookup::Hit(value, deps, Age::Due) => {
                depends_on(deps);
                refresh(self, compute);
                return Ok(value);
            }
            Lookup::Hit(value, deps, Age::Stale) => fallback = Some((value, deps)),
            Lookup::Fault => return self.compute_on_fault(key, compute).await,
            Lookup::Miss => {}
        }
        let flight = match self.inner.flights.join_or_lead(&self.inner.backend, key) {
            Role::Leader(flight) => Some(flight),
            Role::Follower(rx) => {
                if let Some(value) = self.follow::<T>(key, rx).await {
                    return Ok(value);
                }
                // The leader stored nothing (fenced out, failed, cancelled). Compute here and
                // now rather than queue behind a new leader: with a dependency invalidated
                // faster than the computation runs, that queue would grow without bound.
                // Another caller may have stored the value meanwhile, though.
                match self.lookup::<T>(key).await {
                    Lookup::Hit(value, deps, Age::Fresh | Age::Due) => {
                        depends_on(deps);
                        return Ok(value);
                    }
                    Lookup::Hit(value, deps, Age::Stale) => fallback = Some((value, deps)),
                    Lookup::Miss | Lookup::Fault => {}
                }
                None
            }
        };
        let mut flight = flight;
        let ticket = match self.begin_computing(key, Purpose::Miss, &mut flight).await {
            Begun::Compute(ticket) => ticket,
            Begun::Cached(ticket, (encoded, deps)) => match encoded.decode(key) {
                Ok(value) => {
                    self.inner.counters.add(Counter::Hits, 1);
                    depends_on(deps);
                    return Ok(value);
                }
                // (Counted as a fault by the lookup.)
                Err(_) => Some(ticket),
            },
            // (Only refreshes skip.)
            Begun::Skip => None,
        };
        let fallback = Fallback { fallback, failed };
        self.compute_and_store(key, &storing, compute, flight, ticket, fallback)
            .await
    }

    /// Starts one background recomputation of `key`, due for a refresh: none if one runs in
    /// this process (or a miss computes the key), none without a Tokio runtime.
    pub(crate) fn refresh<T, E, D, F, Fut>(&self, key: &str, options: Lifetime, compute: F)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        D: IntoIterator<Item = Dep> + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, D), E>> + Send + 'static,
        E: Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(ttl) = self.stored_ttl(options.ttl) else {
            return;
        };
        let Role::Leader(flight) = self.inner.flights.join_or_lead(&self.inner.backend, key) else {
            return;
        };
        let (cache, key) = (self.clone(), key.to_owned());
        runtime.spawn(async move {
            let mut flight = Some(flight);
            // Another process refreshing (its lease), or done already: nothing to do.
            let Begun::Compute(Some(ticket)) = cache
                .begin_computing(&key, Purpose::Refresh, &mut flight)
                .await
            else {
                return;
            };
            cache.inner.counters.add(Counter::Refreshes, 1);
            debug!(key = key::head(&key), "refreshing ahead");
            let storing = Storing { ttl, options };
            let refreshed = cache
                .compute_and_store(
                    &key,
                    &storing,
                    compute,
                    flight,
                    Some(ticket),
                    Fallback::none(),
                )
                .await;
            if refreshed.is_err() {
                debug!(
                    key = key::head(&key),
                    "refresh failed; the entry stays as it was"
                );
            }
        });
    }

    /// Computing failed: the fail-safe fallback, if there is one and it is still there (see
    /// [`Entry::fail_safe`](crate::Entry::fail_safe)), else the error.
    async fn fail_safe<T: DeserializeOwned, E>(
        &self,
        key: &str,
        fallback: Fallback<T, E>,
        error: E,
    ) -> Result<T, E> {
        let Some((value, deps)) = fallback.fallback.filter(|_| (fallback.failed)(&error)) else {
            return Err(error);
        };
        // Invalidated, deleted or replaced while computing? Read it again.
        let (value, deps) = match self.read_with_deps(key).await {
            Ok(Some((encoded, deps))) => match encoded.decode(key) {
                Ok(current) => (current, deps),
                Err(_) => return Err(error),
            },
            Ok(None) => return Err(error),
            // Unreadable now: the fallback was current when this call read it, unless a
            // failed invalidation of this process's waits to be retried. (A lookup outside
            // any computation, with no invalidation waiting then, did not read the entry's
            // dependencies: with one waiting now, the fallback may be its dependent.)
            Err(_)
                if !self.inner.recovery.is_empty()
                    && (deps.is_empty() || self.inner.recovery.any_pending(&deps)) =>
            {
                return Err(error)
            }
            Err(_) => (value, deps),
        };
        self.inner.counters.add(Counter::FailSafeHits, 1);
        warn!(
            key = key::head(key),
            "computing failed; returning the expired value (fail-safe)"
        );
        depends_on(deps);
        Ok(value)
    }

    /// Whether `key` of this cache is being computed in this task (by this call's callers).
    fn is_computing(&self, key: &str) -> bool {
        let cache = Arc::as_ptr(&self.inner) as usize;
        COMPUTATION
            .try_with(|innermost| {
                let mut next = Some(innermost);
                while let Some(computation) = next {
                    if computation.cache == cache && computation.key == key {
                        return true;
                    }
                    next = computation.outer.as_ref();
                }
                false
            })
            .unwrap_or(false)
    }

    /// Reads `key` for `get_or_compute`; an undecodable value counts as a fault and a miss.
    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Lookup<T> {
        let timer = self.inner.counters.time(Op::Get);
        // Only a nested computation needs the entry's dependencies.
        let nested = COMPUTATION.try_with(|_| ()).is_ok();
        let found = if nested || !self.inner.recovery.is_empty() {
            self.read_with_deps(key).await
        } else {
            let found = self.inner.backend.get(key).await;
            found.map(|hit| hit.map(|encoded| (encoded, Vec::new())))
        };
        drop(timer);
        match found {
            Ok(Some((encoded, deps))) => match encoded.decode(key) {
                Ok(value) => {
                    let age = encoded.age();
                    let counter = match age {
                        Age::Stale => Counter::Misses,
                        Age::Fresh | Age::Due => Counter::Hits,
                    };
                    self.inner.counters.add(counter, 1);
                    Lookup::Hit(value, deps, age)
                }
                Err(error) => {
                    self.fault(key, &error);
                    self.inner.counters.add(Counter::Misses, 1);
                    Lookup::Miss
                }
            },
            Ok(None) => {
                self.inner.counters.add(Counter::Misses, 1);
                Lookup::Miss
            }
            Err(error) => {
                self.fault(key, &error);
                Lookup::Fault
            }
        }
    }

    fn fault(&self, key: &str, error: &Error) {
        self.inner.counters.add(Counter::Faults, 1);
        self.count_fast_failure(error);
        // The key's head only: keys made from requests can be long.
        warn!(key = key::head(key), %error, "cache fault in get_or_compute; computing instead");
    }

    /// Waits for the leader in this process; `None` if it stored nothing.
    async fn follow<T: DeserializeOwned>(
        &self,
        key: &str,
        mut rx: watch::Receiver<Option<Shared>>,
    ) -> Option<T> {
        loop {
            if let Some(shared) = rx.borrow_and_update().clone() {
                let (encoded, deps) = &*shared;
                let value = encoded.decode(key).ok()?;
                depends_on(deps.iter().cloned());
                return Some(value);
            }
            // An error means the leader is gone without a stored value.
            rx.changed().await.ok()?;
        }
    }

    /// The cache could not be read: the callers of `key` in this process take turns, one
    /// computation at a time, and a value is handed only to callers that arrived before its
    /// computation began (see [`Turns`](crate::flight::Turns)). Nothing is stored.
    async fn compute_on_fault<T, E, D, F, Fut>(&self, key: &str, compute: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
    {
        let place = self.inner.turns.enter(key);
        let mut turn = place.turn().await;
        if let Some(shared) = turn.shared() {
            let (encoded, deps) = &*shared;
            if let Ok(value) = encoded.decode(key) {
                depends_on(deps.iter().cloned());
                return Ok(value);
            }
        }
        turn.begin();
        let Computed { value, deps, .. } = self.run(key, compute).await?;
        if place.others_waiting() {
            if let Ok(encoded) = Encoded::encode(key, &value) {
                turn.share(Arc::new((encoded, deps)));
            }
        }
        Ok(value)
    }

    /// Computes without the cache (it cannot be read); the result is not stored.
    async fn compute_uncached<T, E, D, F, Fut>(&self, key: &str, compute: F) -> Result<T, E>
    where
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, D), E>>,
    {
        let Computed { value, .. } = self.run(key, compute).await?;
        Ok(value)
    }

    /// Runs the computation of `key`, collecting what it declares and what nested calls add,
    /// and passes all of it on to the computation this one runs inside, if any.
    async fn run<T, E, D, F, Fut>(&self, key: &str, compute: F) -> Result<Computed<T>, E>
    where
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, D), E>>,
    {
        self.inner.counters.add(Counter::Computations, 1);
        let computation = Arc::new(Computation {
            cache: Arc::as_ptr(&self.inner) as usize,
            key: key.to_owned(),
            deps: Mutex::default(),
            lifetime: Mutex::default(),
            outer: COMPUTATION.try_with(Arc::clone).ok(),
        });
        let result = COMPUTATION.scope(Arc::clone(&computation), compute()).await;
        let nested = std::mem::take(
            &mut *computation
                .deps
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let (value, deps) = match result {
            Ok(found) => found,
            Err(error) => {
                // Nothing is stored, but an outer computation that goes on without this
                // value (a fallback, a "not found" page) still read what this one read.
                depends_on(nested);
                return Err(error);
            }
        };
        let deps = dep::sorted_unique(deps.into_iter().chain(nested));
        depends_on(deps.iter().cloned());
        let lifetime = *computation
            .lifetime
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Computed {
            value,
            deps,
            lifetime,
        })
    }

    /// A ticket and, for a flight's leader, the lease: waits (polls) while another caller
    /// holds the lease, for up to half the lease timeout; a refresh does not wait.
    async fn begin_computing(
        &self,
        key: &str,
        purpose: Purpose,
        flight: &mut Option<Flight>,
    ) -> Begun {
        let holder: u64 = rand::random();
        // Only a flight's leader takes the lease: a follower whose leader failed computes
        // at once.
        let lease = flight.as_ref().map(|_| (holder, self.inner.lease_timeout));
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            // Until the answer is known to say otherwise, assume the lease may be ours: a
            // reply lost with its connection must not leave it held until it expires.
            if let Some(flight) = flight {
                flight.lease = Some(holder);
            }
            // A refresh counts only an entry not due any more as done.
            let want = match purpose {
                Purpose::Miss => Want::Fresh(ttl::now_ms()),
                Purpose::Refresh => Want::NotDue(ttl::now_ms()),
            };
            let begun = self.inner.backend.begin(key, lease, want).await;
            if let (Some(flight), Ok((_, Lease::Busy | Lease::Cached(_)))) = (&mut *flight, &begun)
            {
                flight.lease = None;
            }
            match begun {
                Ok((ticket, Lease::Granted)) => return Begun::Compute(Some(ticket)),
                // Built from a dependency whose failed invalidation waits: compute.
                Ok((ticket, Lease::Cached((_, deps))))
                    if self.inner.recovery.any_pending(&deps) =>
                {
                    return Begun::Compute(Some(ticket))
                }
                // Stored since this caller missed (by the previous lease holder, say).
                Ok((_, Lease::Cached(_))) if purpose == Purpose::Refresh => return Begun::Skip,
                Ok((ticket, Lease::Cached(entry))) => return Begun::Cached(ticket, entry),
                // Another process refreshes it.
                Ok((_, Lease::Busy)) if purpose == Purpose::Refresh => return Begun::Skip,
                // Another caller computes this key: poll for its value (each `begin` also
                // reads the entry) for up to half the lease timeout.
                Ok((_, Lease::Busy)) if started.elapsed() < self.inner.lease_timeout / 2 => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                // Then compute anyway. The lease only spares the source of truth a herd;
                // correctness comes from the fence, and this ticket is fresh. (A holder whose
                // caller was cancelled at the wrong moment can leave its lease behind until
                // it expires; nobody waits that long for it.)
                Ok((ticket, Lease::Busy)) => {
                    debug!(key, "stopped waiting for the lease holder; computing");
                    return Begun::Compute(Some(ticket));
                }
                Err(error) => {
                    self.fault(key, &error);
                    return Begun::Compute(None);
                }
            }
        }
    }

    /// The computation, then the fenced put with `ticket` (none: the cache faulted, nothing
    /// is stored), which also releases the flight's lease; the value goes to the flight's
    /// followers if it was stored. If computing fails, the fail-safe `fallback`.
    async fn compute_and_store<T, E, D, F, Fut>(
        &self,
        key: &str,
        storing: &Storing,
        compute: F,
        mut flight: Option<Flight>,
        ticket: Option<Ticket>,
        fallback: Fallback<T, E>,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
    {
        let Computed {
            value,
            deps,
            lifetime,
        } = match self.run(key, compute).await {
            Ok(computed) => computed,
            Err(error) => return self.fail_safe(key, fallback, error).await,
        };
        let Some(ticket) = ticket else {
            return Ok(value);
        };
        // The computation knows better how long its value lives.
        let set;
        let storing = match lifetime {
            None => storing,
            Some(lifetime) => match self.stored_ttl(lifetime.ttl) {
                Ok(ttl) => {
                    set = Storing {
                        ttl,
                        options: lifetime,
                    };
                    &set
                }
                Err(error) => {
                    self.fault(key, &error);
                    return Ok(value);
                }
            },
        };
        let encoded = match storing.encode(key, &value) {
            Ok(encoded) => encoded,
            Err(error) => {
                self.fault(key, &error);
                return Ok(value);
            }
        };
        if let Some(flight) = &flight {
            flight.close();
        }
        let held = flight.as_ref().and_then(|f| f.lease);
        let backend = &self.inner.backend;
        let timer = self.inner.counters.time(Op::Put);
        let stored = backend
            .put_fenced(
                key,
                encoded.clone(),
                &deps,
                storing.kept_for(),
                ticket,
                held,
            )
            .await;
        drop(timer);
        match stored {
            Ok(outcome) => {
                // The fenced put released the lease. (After an error the flight gives it back
                // when dropped.)
                if let Some(flight) = &mut flight {
                    flight.lease = None;
                }
                if self.record_fenced(key, &deps, outcome) {
                    if let Some(flight) = &flight {
                        flight.share(Arc::new((encoded, deps)));
                    }
                } else if outcome == Fenced::Expired {
                    debug!(key, "computation outlived the maximum ticket age");
                }
            }
            Err(error) => self.fault(key, &error),
        }
        Ok(value)
    }
}

/// What [`MatroskaCache::begin_computing`] found.
enum Begun {
    /// Compute, and store with the ticket (none: the cache faulted; store nothing).
    Compute(Option<Ticket>),
    /// Stored (and fresh) since the caller missed; the ticket in case it does not decode.
    Cached(Ticket, EntryWithDeps),
    /// A refresh that another caller runs or has done.
    Skip,
}

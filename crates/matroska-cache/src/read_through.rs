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

use crate::backend::{Fenced, Lease};
use crate::cache::MatroskaCache;
use crate::codec::Encoded;
use crate::dep::{self, Dep};
use crate::error::Error;
use crate::flight::{Flight, Role, Shared};
use crate::key;
use crate::stats::{Counter, Op};

/// A computation running in a task: what it has collected, and the one it runs inside.
struct Computation {
    /// The cache (its shared state's address) and key being computed.
    cache: usize,
    key: String,
    /// The dependencies declared so far by it and by nested calls.
    deps: Mutex<Vec<Dep>>,
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

/// What a lookup found.
enum Lookup<T> {
    Hit(T, Vec<Dep>),
    Miss,
    /// The cache could not be read.
    Fault,
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
        let ttl = match self
            .stored_ttl(ttl)
            .and_then(|ttl| key::check(key).map(|()| ttl))
        {
            Ok(ttl) => ttl,
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
        match self.lookup::<T>(key).await {
            Lookup::Hit(value, deps) => {
                depends_on(deps);
                return Ok(value);
            }
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
                if let Lookup::Hit(value, deps) = self.lookup::<T>(key).await {
                    depends_on(deps);
                    return Ok(value);
                }
                None
            }
        };
        self.compute_and_store(key, ttl, compute, flight).await
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
                    self.inner.counters.add(Counter::Hits, 1);
                    Lookup::Hit(value, deps)
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
        let (value, deps) = self.run(key, compute).await?;
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
        let (value, _) = self.run(key, compute).await?;
        Ok(value)
    }

    /// Runs the computation of `key`, collecting what it declares and what nested calls add,
    /// and passes all of it on to the computation this one runs inside, if any.
    async fn run<T, E, D, F, Fut>(&self, key: &str, compute: F) -> Result<(T, Vec<Dep>), E>
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
        Ok((value, deps))
    }

    /// A ticket (and, for a flight's leader, the lease), the computation, the fenced put.
    async fn compute_and_store<T, E, D, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
        mut flight: Option<Flight>,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
    {
        let holder: u64 = rand::random();
        // Only a flight's leader takes the lease: a follower whose leader failed computes
        // at once.
        let lease = flight.as_ref().map(|_| (holder, self.inner.lease_timeout));
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        let ticket = loop {
            // Until the answer is known to say otherwise, assume the lease may be ours: a
            // reply lost with its connection must not leave it held until it expires.
            if let Some(flight) = &mut flight {
                flight.lease = Some(holder);
            }
            let begun = self.inner.backend.begin(key, lease).await;
            if let (Some(flight), Ok((_, Lease::Busy | Lease::Cached(_)))) = (&mut flight, &begun) {
                flight.lease = None;
            }
            match begun {
                Ok((ticket, Lease::Granted)) => break Some(ticket),
                // Stored since this caller missed (by the previous lease holder, say).
                // (One that does not decode as `T` was counted as a fault by the lookup.)
                // Built from a dependency whose failed invalidation waits: compute.
                Ok((ticket, Lease::Cached((_, deps))))
                    if self.inner.recovery.any_pending(&deps) =>
                {
                    break Some(ticket)
                }
                Ok((ticket, Lease::Cached((encoded, deps)))) => match encoded.decode(key) {
                    Ok(value) => {
                        self.inner.counters.add(Counter::Hits, 1);
                        depends_on(deps);
                        return Ok(value);
                    }
                    Err(_) => break Some(ticket),
                },
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
                    break Some(ticket);
                }
                Err(error) => {
                    self.fault(key, &error);
                    break None;
                }
            }
        };

        let (value, deps) = self.run(key, compute).await?;
        let Some(ticket) = ticket else {
            return Ok(value);
        };
        let encoded = match Encoded::encode(key, &value) {
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
            .put_fenced(key, encoded.clone(), &deps, ttl, ticket, held)
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

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
//!   they compute themselves rather than return data that may predate an invalidation they
//!   saw.
//! - **Distributed leases.** Across processes (Redis), or caches sharing one memory backend,
//!   one caller per key holds the lease and computes; the others poll for its value. A holder
//!   that dies frees the key after the lease timeout; one that is cancelled frees it at once.
//! - **Russian dolls.** A `get_or_compute` (hit or miss) inside another's computation adds its
//!   dependencies to the outer entry; [`depends_on`] adds any dependency explicitly.
//!
//! Cache faults never fail the call: if the cache cannot be read (Redis down, a value that no
//! longer decodes), the value is computed, logged and counted in
//! [`Stats::faults`](crate::Stats::faults). The computation's own error reaches the caller
//! unchanged and nothing is stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::backend::Fenced;
use crate::cache::{sorted_unique, Inner, MatroskaCache};
use crate::codec::Encoded;
use crate::dep::Dep;
use crate::error::Error;
use crate::stats::Counter;
use crate::ttl;

tokio::task_local! {
    /// The dependencies discovered by the computation running in this task.
    static COMPUTATION: Arc<Mutex<Vec<Dep>>>;
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
        .try_with(|collected| {
            collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(deps)
        })
        .is_ok()
}

/// A stored result a leader shares with the callers waiting for it.
type Shared = Arc<(Encoded, Vec<Dep>)>;

/// The computations running in this process, by key.
#[derive(Default)]
pub(crate) struct Flights(Mutex<HashMap<String, watch::Receiver<Option<Shared>>>>);

enum Role {
    Leader(Flight),
    Follower(watch::Receiver<Option<Shared>>),
}

impl Flights {
    fn join_or_lead(&self, inner: &Arc<Inner>, key: &str) -> Role {
        let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = flights.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.to_owned(), rx);
        Role::Leader(Flight {
            inner: Arc::clone(inner),
            key: key.to_owned(),
            tx,
            lease: None,
        })
    }
}

/// The leader's side of a flight. Dropping it (finished, failed or cancelled) ends the flight:
/// followers that got no value compute themselves, and a lease still held is given back.
struct Flight {
    inner: Arc<Inner>,
    key: String,
    tx: watch::Sender<Option<Shared>>,
    /// The distributed lease this leader holds, if any.
    lease: Option<u64>,
}

impl Flight {
    /// Lets no new follower join: from now on a caller that misses starts its own flight.
    ///
    /// Called before the result is stored. A follower that joined earlier began its read
    /// before the store, so the fence also covered every invalidation it could have seen
    /// complete; a caller arriving later may have seen an invalidation drop the stored result,
    /// and must not be handed it.
    fn close(&self) {
        let mut flights = self
            .inner
            .flights
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            flights.remove(&self.key);
        }
    }

    fn share(&self, value: Shared) {
        self.tx.send_replace(Some(value));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.close();
        if let (Some(holder), Ok(runtime)) = (self.lease, tokio::runtime::Handle::try_current()) {
            // Cancelled, failed, or unsure whether the lease was taken (a reply lost with its
            // connection): give it back rather than make others wait for it to expire. The
            // release only deletes a lease this holder owns, so retrying is safe.
            let inner = Arc::clone(&self.inner);
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                let mut delay = Duration::from_millis(50);
                for _ in 0..5 {
                    if inner.backend.release_lease(&key, holder).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            });
        }
    }
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
    /// their dependencies to the outer entry. Cache faults are logged and counted, never
    /// returned: the value is computed instead. See the [module documentation](self).
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
        let ttl = match ttl::check(ttl) {
            Ok(ttl) => ttl,
            // Like `put`, an invalid TTL is refused; here that means the value is returned
            // but not stored (and the cache is not read for a value it could not renew).
            Err(error) => {
                self.fault(key, &error);
                return self.compute_uncached(compute).await;
            }
        };
        loop {
            match self.lookup::<T>(key).await {
                Lookup::Hit(value, deps) => {
                    depends_on(deps);
                    return Ok(value);
                }
                Lookup::Fault => return self.compute_uncached(compute).await,
                Lookup::Miss => {}
            }
            match self.inner.flights.join_or_lead(&self.inner, key) {
                Role::Leader(flight) => return self.lead(key, ttl, compute, flight).await,
                Role::Follower(rx) => {
                    if let Some(value) = self.follow::<T>(key, rx).await {
                        return Ok(value);
                    }
                    // The leader's value was not stored: look again, and maybe lead.
                }
            }
        }
    }

    /// Reads `key` for `get_or_compute`; an undecodable value counts as a fault and a miss.
    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Lookup<T> {
        let counters = &self.inner.counters;
        // Only a nested computation needs the entry's dependencies.
        let nested = COMPUTATION.try_with(|_| ()).is_ok();
        let found = if nested {
            self.inner.backend.get_with_deps(key).await
        } else {
            let found = self.inner.backend.get(key).await;
            found.map(|hit| hit.map(|encoded| (encoded, Vec::new())))
        };
        match found {
            Ok(Some((encoded, deps))) => match encoded.decode(key) {
                Ok(value) => {
                    counters.add(Counter::Hits, 1);
                    Lookup::Hit(value, deps)
                }
                Err(error) => {
                    self.fault(key, &error);
                    counters.add(Counter::Misses, 1);
                    Lookup::Miss
                }
            },
            Ok(None) => {
                counters.add(Counter::Misses, 1);
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
        warn!(key, %error, "cache fault in get_or_compute; computing instead");
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

    /// Computes without the cache (it cannot be read); the result is not stored.
    async fn compute_uncached<T, E, D, F, Fut>(&self, compute: F) -> Result<T, E>
    where
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, D), E>>,
    {
        let (value, _) = self.run(compute).await?;
        Ok(value)
    }

    /// Runs a computation, collecting what it declares and what nested calls add, and passes
    /// all of it on to the computation this one runs inside, if any.
    async fn run<T, E, D, F, Fut>(&self, compute: F) -> Result<(T, Vec<Dep>), E>
    where
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, D), E>>,
    {
        self.inner.counters.add(Counter::Computations, 1);
        let collected: Arc<Mutex<Vec<Dep>>> = Arc::default();
        let (value, deps) = COMPUTATION.scope(Arc::clone(&collected), compute()).await?;
        let nested = std::mem::take(&mut *collected.lock().unwrap_or_else(PoisonError::into_inner));
        let deps = sorted_unique(deps.into_iter().chain(nested));
        depends_on(deps.iter().cloned());
        Ok((value, deps))
    }

    /// The leader's path: a ticket (and lease), the computation, the fenced put.
    async fn lead<T, E, D, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
        mut flight: Flight,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send,
        D: IntoIterator<Item = Dep>,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<(T, D), E>> + Send,
    {
        let holder: u64 = rand::random();
        let lease_timeout = self.inner.lease_timeout;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(2);
        let ticket = loop {
            // Until the answer is known to say otherwise, assume the lease may be ours: a
            // reply lost with its connection must not leave it held until it expires.
            flight.lease = Some(holder);
            let begun = self
                .inner
                .backend
                .begin(key, Some((holder, lease_timeout)))
                .await;
            if let Ok((_, false)) = begun {
                flight.lease = None;
            }
            match begun {
                Ok((ticket, true)) => break Some(ticket),
                // Another caller computes this key: poll for its value for up to half the
                // lease timeout.
                Ok((_, false)) if started.elapsed() < lease_timeout / 2 => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                    if let Lookup::Hit(value, deps) = self.lookup::<T>(key).await {
                        depends_on(deps);
                        return Ok(value);
                    }
                }
                // Then compute anyway. The lease only spares the source of truth a herd;
                // correctness comes from the fence, and this ticket is fresh. (A holder whose
                // caller was cancelled at the wrong moment can leave its lease behind until
                // it expires; nobody waits that long for it.)
                Ok((ticket, false)) => {
                    debug!(key, "stopped waiting for the lease holder; computing");
                    break Some(ticket);
                }
                Err(error) => {
                    self.fault(key, &error);
                    break None;
                }
            }
        };

        let (value, deps) = self.run(compute).await?;
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
        flight.close();
        let backend = &self.inner.backend;
        let stored = backend
            .put_fenced(key, encoded.clone(), &deps, ttl, ticket, Some(holder))
            .await;
        match stored {
            Ok(outcome) => {
                // The fenced put released the lease. (After an error the flight gives it back
                // when dropped.)
                flight.lease = None;
                if self.record_fenced(key, &deps, outcome) {
                    flight.share(Arc::new((encoded, deps)));
                } else if outcome == Fenced::Expired {
                    debug!(key, "computation outlived the maximum ticket age");
                }
            }
            Err(error) => self.fault(key, &error),
        }
        Ok(value)
    }
}

//! Where entries and their dependency index live.
//!
//! [`Backend`] is the contract; [`MemoryBackend`](memory::MemoryBackend) keeps everything in
//! process, [`RedisBackend`](redis::RedisBackend) in a Redis server shared by every process.
//! [`MatroskaCache`](crate::MatroskaCache) encodes values and keeps statistics; a backend
//! stores [`Encoded`] values and the dependency index.
//!
//! Every backend guarantees:
//! - `put` replaces the entry *and its dependencies*; no instant exists where the entry is
//!   readable but not reachable from its dependencies (for the writer's own view).
//! - When `invalidate` returns, no entry that depended on one of the dependencies and was
//!   stored before `invalidate` began is readable. Entries stored while it runs may survive
//!   (they are not deleted by it).
//! - `invalidate` counts each dropped entry once.
//! - An entry with [`Freshness`] is stored for its fallback window too; `has` and a `begin`
//!   that asks for a fresh entry treat one past its freshness as absent.
//! - A fenced put with a [`Ticket`] stores nothing if one of its dependencies was invalidated
//!   after the ticket was taken, or is being invalidated while it runs: a value computed from
//!   data older than an invalidation is never stored after it (the "stale set").

pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::codec::Encoded;
use crate::dep::Dep;
use crate::error::Result;
pub use crate::ttl::{Age, Freshness, Want};

/// What an index prune reclaimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Dependency index keys visited.
    pub indexes: u64,
    /// Index members (entry references) visited.
    pub members: u64,
    /// Members removed because their entry expired, was evicted, deleted, replaced or
    /// invalidated.
    pub removed: u64,
    /// Directories deleted because no shard holds a dependent of their dependency any more
    /// (Redis with several shards; see `docs/cluster.md`).
    pub directories: u64,
    /// Keys named as dependency indexes that are not indexes (another type: written by
    /// something else under the prefix), skipped and left alone.
    pub unreadable: u64,
}

/// Taken before reading the source of truth; a [fenced put](Backend::put_fenced) with it
/// stores only if none of the value's dependencies was invalidated since.
///
/// A ticket is a position in the backend's invalidation order plus the time it was taken
/// (tickets older than the backend's maximum ticket age are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
    time_ms: u64,
    epoch: u64,
}

impl Ticket {
    /// A ticket at position `seq` of the invalidation order, taken at `time_ms` (on the
    /// backend's own clock, in milliseconds), in the backend's `epoch`: a store that lost its
    /// state (a restart, a flush) starts a new epoch, and tickets of an older one are refused.
    ///
    /// Crate-private: a ticket only ever comes from a backend, so none can be forged to pass
    /// a fence.
    pub(crate) fn new(seq: u64, time_ms: u64, epoch: u64) -> Self {
        Ticket {
            seq,
            time_ms,
            epoch,
        }
    }

    /// The epoch of the store the ticket was taken from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position in the invalidation order.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When it was taken, in milliseconds on the backend's clock.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }
}

/// How old a ticket may be when its fenced put runs, unless configured otherwise: a
/// computation that takes longer is not cached. Invalidation marks are kept this long.
pub const DEFAULT_MAX_TICKET_AGE: Duration = Duration::from_secs(600);

/// What [`Backend::begin`] found out about the lease on computing a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lease {
    /// This caller holds the lease (or asked for none).
    Granted,
    /// Another caller holds it and is computing the key.
    Busy,
    /// The key is cached (another caller stored it since this one missed): here is the entry
    /// with its dependencies; no lease was taken.
    Cached(EntryWithDeps),
}

/// What a fenced put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fenced {
    /// The value was stored.
    Stored,
    /// A dependency was invalidated after the ticket was taken (or is being invalidated right
    /// now): the value may be stale, so it was not stored.
    Invalidated,
    /// The ticket is older than the backend's maximum ticket age, or from before the store
    /// lost its state; nothing was stored.
    Expired,
}

/// A store for cache entries and their reverse dependency index.
///
/// Implementations must uphold the guarantees in the [module documentation](self). All
/// methods are async and their futures are `Send`.
pub trait Backend: Send + Sync + 'static {
    /// What names this store in exported metrics (the `prefix` label): the Redis prefix, or
    /// `"memory"`.
    fn label(&self) -> &str {
        "memory"
    }

    /// How often a server's circuit breaker opened ([`Stats::breaker_openings`](crate::Stats)):
    /// zero for backends without one.
    fn breaker_openings(&self) -> u64 {
        0
    }

    /// The entry stored under `key`, if any (whatever its [`Freshness`]: the cache decides
    /// what a stale entry is good for).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Encoded>>> + Send;

    /// The entries stored under `keys`, in the same order (one round trip on Redis).
    fn get_many(&self, keys: &[&str]) -> impl Future<Output = Result<Vec<Option<Encoded>>>> + Send;

    /// Whether an entry is stored under `key` and fresh (not past its [`Freshness`]).
    fn has(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Stores `value` under `key` with its dependencies (no duplicates) for `ttl` (non-zero),
    /// replacing any previous entry and its dependencies.
    fn put(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The entry under `key` with its dependencies, if any.
    fn get_with_deps(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<EntryWithDeps>>> + Send;

    /// A ticket for a fenced put, and, if `lease` is given, the lease on computing `key` for
    /// `lease.1` as holder `lease.0`: [`Lease::Cached`] (and no lease) if the entry exists by
    /// now and is what `want` accepts (fresh, or for a refresh not even due: see
    /// [`Freshness`]), else [`Lease::Granted`] or [`Lease::Busy`]. Without `lease` it is
    /// always `Granted`.
    fn begin(
        &self,
        key: &str,
        lease: Option<(u64, Duration)>,
        want: Want,
    ) -> impl Future<Output = Result<(Ticket, Lease)>> + Send;

    /// Like [`put`](Backend::put), but only if no dependency was invalidated after `ticket`
    /// was taken, nor is being invalidated now. Releases the lease of `lease_holder`, if
    /// given, in the same step.
    fn put_fenced(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
        ticket: Ticket,
        lease_holder: Option<u64>,
    ) -> impl Future<Output = Result<Fenced>> + Send;

    /// Gives up the lease on `key` if `holder` holds it.
    fn release_lease(&self, key: &str, holder: u64) -> impl Future<Output = Result<()>> + Send;

    /// Removes the entry under `key`; returns whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Drops every entry that depends on any of `deps` (no duplicates); returns how many.
    fn invalidate(&self, deps: &[Dep]) -> impl Future<Output = Result<u64>> + Send;

    /// The dependencies of the entry under `key`, if it exists.
    fn deps(&self, key: &str) -> impl Future<Output = Result<Option<Vec<Dep>>>> + Send;

    /// Reclaims index members whose entries are gone.
    fn prune(&self) -> impl Future<Output = Result<PruneReport>> + Send;
}

/// An entry with its dependencies, as [`Backend::get_with_deps`] returns it.
pub type EntryWithDeps = (Encoded, Vec<Dep>);

/// A boxed, `Send` future: what the object-safe [`DynBackend`] returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Backend`] with boxed futures, so that [`MatroskaCache`](crate::MatroskaCache) can hold any
/// backend behind one type. The cost is one allocation per operation.
pub(crate) trait DynBackend: Send + Sync + 'static {
    fn label(&self) -> &str;
    fn breaker_openings(&self) -> u64;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Encoded>>>;
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Encoded>>>>;
    fn has<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Encoded,
        deps: &'a [Dep],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<()>>;
    fn get_with_deps<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<EntryWithDeps>>>;
    fn begin<'a>(
        &'a self,
        key: &'a str,
        lease: Option<(u64, Duration)>,
        want: Want,
    ) -> BoxFuture<'a, Result<(Ticket, Lease)>>;
    #[allow(clippy::too_many_arguments)]
    fn put_fenced<'a>(
        &'a self,
        key: &'a str,
        value: Encoded,
        deps: &'a [Dep],
        ttl: Duration,
        ticket: Ticket,
        lease_holder: Option<u64>,
    ) -> BoxFuture<'a, Result<Fenced>>;
    fn release_lease<'a>(&'a self, key: &'a str, holder: u64) -> BoxFuture<'a, Result<()>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn invalidate<'a>(&'a self, deps: &'a [Dep]) -> BoxFuture<'a, Result<u64>>;
    fn deps<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<Dep>>>>;
    fn prune(&self) -> BoxFuture<'_, Result<PruneReport>>;
}

impl<B: Backend> DynBackend for B {
    fn label(&self) -> &str {
        Backend::label(self)
    }
    fn breaker_openings(&self) -> u64 {
        Backend::breaker_openings(self)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Encoded>>> {
        Box::pin(Backend::get(self, key))
    }
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Encoded>>>> {
        Box::pin(Backend::get_many(self, keys))
    }
    fn has<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Backend::has(self, key))
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Encoded,
        deps: &'a [Dep],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Backend::put(self, key, value, deps, ttl))
    }
    fn get_with_deps<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<EntryWithDeps>>> {
        Box::pin(Backend::get_with_deps(self, key))
    }
    fn begin<'a>(
        &'a self,
        key: &'a str,
        lease: Option<(u64, Duration)>,
        want: Want,
    ) -> BoxFuture<'a, Result<(Ticket, Lease)>> {
        Box::pin(Backend::begin(self, key, lease, want))
    }
    fn put_fenced<'a>(
        &'a self,
        key: &'a str,
        value: Encoded,
        deps: &'a [Dep],
        ttl: Duration,
        ticket: Ticket,
        lease_holder: Option<u64>,
    ) -> BoxFuture<'a, Result<Fenced>> {
        Box::pin(Backend::put_fenced(
            self,
            key,
            value,
            deps,
            ttl,
            ticket,
            lease_holder,
        ))
    }
    fn release_lease<'a>(&'a self, key: &'a str, holder: u64) -> BoxFuture<'a, Result<()>> {
        Box::pin(Backend::release_lease(self, key, holder))
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Backend::delete(self, key))
    }
    fn invalidate<'a>(&'a self, deps: &'a [Dep]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Backend::invalidate(self, deps))
    }
    fn deps<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<Dep>>>> {
        Box::pin(Backend::deps(self, key))
    }
    fn prune(&self) -> BoxFuture<'_, Result<PruneReport>> {
        Box::pin(Backend::prune(self))
    }
}

//! The Redis backend: entries and their dependency indexes in a Redis server shared by every
//! process.
//!
//! Key layout: see the crate README and the private `keys` module. In short, each entry
//! is one string with a TTL (its generation, format and dependencies in front of the value:
//! [`StoredEntry`]), each dependency one index hash `cache key -> generation` without a
//! TTL, and every key of a prefix shares the prefix as its Redis Cluster hash tag.
//!
//! | operation | round trips | how |
//! | --- | --- | --- |
//! | `get` | 1 | `GET` |
//! | `get_many` | 1 | `MGET` |
//! | `has` | 1 | `GETRANGE` of the generation (an entry from before a restart is a miss) |
//! | `put` | 1 | `put.lua`: entry and index members together |
//! | `delete` | 1 | `UNLINK` (index members reclaimed later) |
//! | `deps` | 1 | `deps.lua`: the entry's header and dependency list, not its value |
//! | `invalidate` | 1 without dependents | `invalidate.lua` marks the fence table |
//! | | 2 up to `batch_size` dependents | `invalidate.lua`, then `drop.lua` |
//! | | beyond that, per 256 dependencies: 1 + pipelined `HSCAN` rounds + 1 per `batch_size` | see `invalidate.rs` |
//!
//! Up to `batch_size` dependents (1,000 by default) of up to 256 dependencies, an
//! invalidation is atomic: its dependents disappear together. Beyond that they are dropped in
//! atomic batches so that Redis is never blocked for long; `invalidate` returns when all of
//! them are gone, and entries re-cached while it runs are not deleted by it. If it fails
//! half-way (connection loss), the remaining dependents are still in the index and calling it
//! again drops them.
//!
//! **Fencing.** An invalidation records the generation at which it began in a fixed-size
//! fence table (`{prefix}:f`, 16,384 buckets, one per hash of the dependency); a fenced put
//! whose ticket is older than a mark of its dependencies' buckets stores nothing. Sharing
//! buckets only ever refuses a put needlessly (a miss). Nothing per dependency outlives an
//! invalidation, however many distinct dependencies are invalidated.
//!
//! **Eviction.** Entries always have a TTL; indexes never do. At connect the backend reads
//! `maxmemory-policy` and refuses `allkeys-*` policies, which could evict an index while its
//! entries live and so lose invalidations. `noeviction` and every `volatile-*` policy are safe:
//! the latter evict entries only.
//!
//! **Garbage.** Members of entries that expired, were evicted, deleted, replaced, or
//! invalidated through another dependency are left in the index at first (removing them
//! eagerly would cost a read before every write). Invalidation removes the members it visits,
//! and [`prune`](crate::MatroskaCache::prune) walks every index in bounded batches and removes
//! the rest, so after a prune the index holds only live entries. A background task prunes
//! every ten minutes by default ([`RedisBackendBuilder::auto_prune`]).

mod connection;
mod entry;
mod inspect;
mod invalidate;
mod keys;
mod scripts;
#[cfg(feature = "tls")]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tracing::{debug, warn};

use connection::{Connection, Session};
use scripts::{BEGIN, DEPS, PRUNE, PUT, RELEASE};

pub use entry::StoredEntry;
pub use inspect::PrefixStats;
pub(crate) use keys::KeySpace;

use super::{Backend, Fenced, Lease, PruneReport, Ticket, DEFAULT_MAX_TICKET_AGE};
use crate::codec::{Encoded, Format};
use crate::dep::Dep;
use crate::error::{Error, Result};
use crate::ttl;

/// The default time one round trip may take before it fails with [`Error::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default interval of the background prune.
pub const DEFAULT_AUTO_PRUNE: Duration = Duration::from_secs(600);
/// The default number of members an invalidation or prune handles per atomic batch.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// A backend that keeps entries in Redis, shared by every process that uses the same prefix.
///
/// Cheap to clone: clones share one multiplexed connection that reconnects by itself (and
/// handshakes the prefix's epoch before it serves anything: see the crate README on
/// persistence and restarts).
///
/// ```no_run
/// use matroska_cache::{MatroskaCache, RedisBackend};
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), matroska_cache::Error> {
/// let backend = RedisBackend::builder("redis://127.0.0.1:6379/", "cache")
///     .timeout(Duration::from_millis(500))
///     .build()
///     .await?;
/// let cache = MatroskaCache::new(backend);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    /// Dropped with the last clone; the background pruner stops when it is gone.
    alive: Arc<()>,
    conn: Arc<Connection>,
    keys: KeySpace,
    /// The prefix as given, for the metrics label.
    prefix: Arc<str>,
    timeout: Duration,
    batch_size: usize,
    max_ticket_age: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// Configures and connects a [`RedisBackend`].
#[derive(Debug)]
#[must_use]
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    batch_size: usize,
    max_ticket_age: Duration,
    check_eviction_policy: bool,
    auto_prune: Option<Duration>,
    #[cfg(feature = "tls")]
    tls_root_certificate: Option<Vec<u8>>,
}

impl RedisBackendBuilder {
    /// Trust this root certificate (PEM) for `rediss://` connections instead of the
    /// platform's roots: for servers with a private certificate authority.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// How `rediss://` connections are made: with the root certificate given, or the
    /// platform's. Plain URLs need nothing.
    #[cfg(feature = "tls")]
    fn tls(&self) -> Result<Option<tls::Tls>> {
        if !self.url.starts_with("rediss:") {
            return Ok(None);
        }
        tls::Tls::new(self.tls_root_certificate.as_deref()).map(Some)
    }

    /// How long one round trip may take before it fails with [`Error::Timeout`]
    /// (default [`DEFAULT_TIMEOUT`]). A long invalidation is many round trips, each bounded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting (and each reconnect attempt) may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many index members one atomic batch of an invalidation or prune handles
    /// (default [`DEFAULT_BATCH_SIZE`]). Larger batches are faster and block Redis longer.
    pub fn batch_size(mut self, members: usize) -> Self {
        self.batch_size = members;
        self
    }

    /// How old a ticket may be when its fenced put runs (default
    /// [`DEFAULT_MAX_TICKET_AGE`]): a longer
    /// computation is not cached. Invalidation marks are kept this long.
    pub fn max_ticket_age(mut self, age: Duration) -> Self {
        self.max_ticket_age = age;
        self
    }

    /// How often a background task prunes the dependency index (default
    /// [`DEFAULT_AUTO_PRUNE`]), or `None` for never (then call
    /// [`MatroskaCache::prune`](crate::MatroskaCache::prune) yourself, or run `matroska prune`).
    ///
    /// Of all processes sharing the prefix, one at a time prunes (a lock key in Redis with the
    /// interval as its TTL). The task ends when the last clone of the backend is dropped.
    pub fn auto_prune(mut self, every: Option<Duration>) -> Self {
        self.auto_prune = every;
        self
    }

    /// Skip reading `maxmemory-policy` at connect, for servers that deny `CONFIG GET`.
    ///
    /// Only call this if you know the policy is `noeviction` or `volatile-*`: under an
    /// `allkeys-*` policy Redis may evict an index and invalidations are lost.
    pub fn assume_safe_eviction_policy(mut self) -> Self {
        self.check_eviction_policy = false;
        self
    }

    /// Connects, checks the server's eviction policy, and returns the backend.
    ///
    /// Fails promptly with [`Error::InvalidUrl`], [`Error::Redis`] or [`Error::Timeout`] if the
    /// URL is malformed or the server is unreachable, and with
    /// [`Error::UnsafeEvictionPolicy`] if Redis could evict indexes.
    pub async fn build(self) -> Result<RedisBackend> {
        let keys = KeySpace::new(&self.prefix)?;
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig("batch_size must be at least 1"));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be above zero"));
        }
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| Error::InvalidUrl(e.into()))?;
        let connection = Connection::new(client, keys.clone(), self.connect_timeout);
        #[cfg(feature = "tls")]
        let connection = connection.with_tls(self.tls()?);
        let backend = RedisBackend {
            alive: Arc::new(()),
            conn: Arc::new(connection),
            keys,
            prefix: Arc::from(self.prefix.as_str()),
            timeout: self.timeout,
            batch_size: self.batch_size,
            max_ticket_age: self.max_ticket_age,
        };
        backend.check_version().await?;
        if self.check_eviction_policy {
            backend.check_eviction_policy().await?;
        }
        match self.auto_prune {
            Some(every) if every.is_zero() => {
                return Err(Error::InvalidConfig(
                    "the auto-prune interval must be above zero",
                ))
            }
            Some(every) => backend.spawn_pruner(every),
            None => {}
        }
        Ok(backend)
    }
}

impl RedisBackend {
    /// A builder for `url` (`redis://[user:password@]host[:port][/db]`) and `prefix`, under
    /// which every key of this cache lives.
    pub fn builder(url: &str, prefix: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            batch_size: DEFAULT_BATCH_SIZE,
            max_ticket_age: DEFAULT_MAX_TICKET_AGE,
            check_eviction_policy: true,
            auto_prune: Some(DEFAULT_AUTO_PRUNE),
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
        }
    }

    /// The current session (connecting and handshaking if there is none) and its
    /// connection, to send one round trip on.
    async fn connect(&self) -> Result<(Arc<Session>, MultiplexedConnection)> {
        let session = self.conn.session().await?;
        let conn = session.conn.clone();
        Ok((session, conn))
    }

    /// Runs one round trip of `session` under the configured timeout. An error that breaks
    /// the connection retires the session, as does a script that found another epoch.
    async fn round_trip<T>(
        &self,
        session: &Session,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                session.check(&error);
                Err(error.into())
            }
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Runs `attempt` again, once, on a new session if the first found the prefix in
    /// another epoch (it was flushed under this connection).
    async fn in_current_epoch<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match attempt().await {
            Err(Error::Redis(error)) if error.code() == Some(connection::EPOCH_CHANGE) => {
                attempt().await
            }
            other => other,
        }
    }

    /// Starts the background prune: every `every`, the process that takes the prune lock
    /// walks the index once.
    fn spawn_pruner(&self, every: Duration) {
        let alive = Arc::downgrade(&self.alive);
        // The task's own handle must not keep the backend "alive" itself.
        let pruner = RedisBackend {
            alive: Arc::new(()),
            ..self.clone()
        };
        tokio::spawn(async move {
            // `Duration::MAX` means "never"; tokio's clock cannot add that to now.
            let mut ticker = tokio::time::interval(every.min(ttl::MAX_TTL));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            loop {
                ticker.tick().await;
                if alive.upgrade().is_none() {
                    break;
                }
                let mut lock = redis::cmd("SET");
                lock.arg(pruner.keys.prune_lock())
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl::redis_millis(every));
                let locked = async {
                    let (session, mut conn) = pruner.connect().await?;
                    pruner
                        .round_trip(&session, lock.query_async::<Option<String>>(&mut conn))
                        .await
                };
                match locked.await {
                    Ok(Some(_)) => match Backend::prune(&pruner).await {
                        Ok(report) => debug!(?report, "background prune"),
                        Err(error) => warn!(%error, "background prune failed; retrying later"),
                    },
                    Ok(None) => debug!("another process holds the prune lock"),
                    Err(error) => warn!(%error, "background prune could not take its lock"),
                }
            }
        });
    }

    async fn check_version(&self) -> Result<()> {
        let version = self.conn.session().await?.version.clone();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(Error::UnsupportedServer { version });
        }
        Ok(())
    }

    async fn check_eviction_policy(&self) -> Result<()> {
        let (session, mut conn) = self.connect().await?;
        let reply: Vec<String> = self
            .round_trip(
                &session,
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut conn),
            )
            .await
            .map_err(|e| match e {
                Error::Redis(e) => Error::EvictionPolicyUnknown(e),
                other => other,
            })?;
        let policy = reply.get(1).cloned().unwrap_or_default();
        if policy.starts_with("allkeys-") {
            return Err(Error::UnsafeEvictionPolicy { policy });
        }
        debug!(%policy, "Redis eviction policy is safe for dependency indexes");
        Ok(())
    }

    /// Runs `put.lua`: a plain put, or with `fence` a fenced one.
    async fn store(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
        fence: Option<(Ticket, Option<u64>)>,
    ) -> Result<Fenced> {
        let ttl = ttl::millis(ttl::check(ttl)?);
        let tail = entry::tail(&value, &deps_json(deps));
        let outcome: i8 = self
            .in_current_epoch(|| async {
                let (session, mut conn) = self.connect().await?;
                let mut invocation = PUT.prepare_invoke();
                invocation
                    .key(self.keys.sequence())
                    .key(self.keys.epoch())
                    .key(self.keys.data(key))
                    .key(self.keys.fences());
                for dep in deps {
                    invocation.key(self.keys.index(dep));
                }
                invocation
                    .arg(key)
                    .arg(ttl)
                    .arg(&tail[..])
                    .arg(session.floor);
                match fence {
                    Some((ticket, holder)) => invocation
                        .key(self.keys.lease(key))
                        .arg(ticket.seq())
                        .arg(ticket.time_ms())
                        .arg(ttl::redis_millis(self.max_ticket_age))
                        .arg(holder.map(|h| h.to_string()).unwrap_or_default())
                        .arg(ticket.epoch())
                        .arg(deps.iter().map(keys::fence_bucket).collect::<Vec<_>>()),
                    None => invocation.arg(""),
                };
                self.round_trip(&session, invocation.invoke_async(&mut conn))
                    .await
            })
            .await?;
        Ok(match outcome {
            1 => Fenced::Stored,
            0 => Fenced::Invalidated,
            _ => Fenced::Expired,
        })
    }

    /// Prunes `indexes` (each with the members to check) in one atomic step: removes members
    /// whose entries are gone.
    async fn prune_batch(&self, indexes: &[(&str, Vec<(String, u64)>)]) -> Result<u64> {
        let mut invocation = PRUNE.prepare_invoke();
        for (index, _) in indexes {
            invocation.key(*index);
        }
        invocation.arg(indexes.len());
        for (position, (_, members)) in indexes.iter().enumerate() {
            for (key, generation) in members {
                invocation.key(self.keys.data(key));
                invocation
                    .arg(position + 1)
                    .arg(key)
                    .arg(entry::generation_text(*generation));
            }
        }
        let (session, mut conn) = self.connect().await?;
        self.round_trip(&session, invocation.invoke_async(&mut conn))
            .await
    }

    /// One `HSCAN` step over `index`: the next cursor and the `(cache key, generation)` pairs.
    /// Members that are not ours (non-UTF-8 names, non-numeric generations) are skipped.
    async fn scan_index(&self, index: &str, cursor: u64) -> Result<(u64, Vec<(String, u64)>)> {
        let (session, mut conn) = self.connect().await?;
        let (next, flat): (u64, Vec<Vec<u8>>) = self
            .round_trip(
                &session,
                redis::cmd("HSCAN")
                    .arg(index)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(self.batch_size)
                    .query_async(&mut conn),
            )
            .await?;
        Ok((next, parse_members(flat)))
    }
}

/// Parses a flat `HGETALL` or `HSCAN` reply into `(cache key, generation)` pairs.
fn parse_members(flat: Vec<Vec<u8>>) -> Vec<(String, u64)> {
    flat.chunks_exact(2)
        .filter_map(|pair| {
            let key = String::from_utf8(pair[0].clone()).ok()?;
            let generation = std::str::from_utf8(&pair[1]).ok()?.parse().ok()?;
            Some((key, generation))
        })
        .collect()
}

/// The `d` field of an entry: the dependencies' texts as a JSON list.
fn deps_json(deps: &[Dep]) -> String {
    let texts: Vec<&str> = deps.iter().map(Dep::as_str).collect();
    serde_json::to_string(&texts).expect("a list of strings always encodes")
}

/// Parses the `d` field of an entry.
fn parse_deps(key: &str, json: &str) -> Result<Vec<Dep>> {
    let corrupt = |detail: String| Error::Corrupt {
        key: key.to_owned(),
        detail,
    };
    let texts: Vec<String> =
        serde_json::from_str(json).map_err(|e| corrupt(format!("dependency list: {e}")))?;
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: crate::dep::ParseDepError| corrupt(e.to_string()))
        })
        .collect()
}

/// The value of a stored entry that starts at `start`, moved to the front of the buffer
/// (cheaper than splitting a `Bytes`, which allocates).
fn value_at(mut stored: Vec<u8>, format: Format, start: usize) -> Encoded {
    stored.drain(..start);
    Encoded {
        format,
        bytes: Bytes::from(stored),
    }
}

/// The value of a stored entry read by `session`, or `None` if there is none in its epoch.
fn stored_value(session: &Session, key: &str, stored: Option<Vec<u8>>) -> Result<Option<Encoded>> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let (format, start) = entry::value_start(key, &stored)?;
    if !session.holds(key, &stored)? {
        return Ok(None); // from before a restart: see connection.rs
    }
    Ok(Some(value_at(stored, format, start)))
}

/// Parses a stored entry into its value and dependencies.
fn decode_entry(key: &str, bytes: Vec<u8>) -> Result<(Encoded, Vec<Dep>)> {
    let entry = StoredEntry::parse(key, &bytes)?;
    let (format, start) = (entry.format, bytes.len() - entry.value.len());
    let deps = parse_deps(key, entry.deps_json)?;
    Ok((value_at(bytes, format, start), deps))
}

impl Backend for RedisBackend {
    fn label(&self) -> &str {
        &self.prefix
    }

    async fn get(&self, key: &str) -> Result<Option<Encoded>> {
        let (session, mut conn) = self.connect().await?;
        let stored: Option<Vec<u8>> = self
            .round_trip(&session, conn.get(self.keys.data(key)))
            .await?;
        stored_value(&session, key, stored)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Encoded>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (session, mut conn) = self.connect().await?;
        let data: Vec<String> = keys.iter().map(|key| self.keys.data(key)).collect();
        let stored: Vec<Option<Vec<u8>>> = self
            .round_trip(
                &session,
                redis::cmd("MGET").arg(&data).query_async(&mut conn),
            )
            .await?;
        keys.iter()
            .zip(stored)
            .map(|(key, stored)| stored_value(&session, key, stored))
            .collect()
    }

    async fn has(&self, key: &str) -> Result<bool> {
        // The generation, to tell an entry of this epoch from one a restart brought back.
        let (session, mut conn) = self.connect().await?;
        let head: Vec<u8> = self
            .round_trip(&session, conn.getrange(self.keys.data(key), 0, 19))
            .await?;
        Ok(!head.is_empty() && session.holds(key, &head)?)
    }

    async fn put(&self, key: &str, value: Encoded, deps: &[Dep], ttl: Duration) -> Result<()> {
        self.store(key, value, deps, ttl, None).await.map(|_| ())
    }

    async fn get_with_deps(&self, key: &str) -> Result<Option<crate::backend::EntryWithDeps>> {
        let (session, mut conn) = self.connect().await?;
        let stored: Option<Vec<u8>> = self
            .round_trip(&session, conn.get(self.keys.data(key)))
            .await?;
        match stored {
            Some(bytes) if session.holds(key, &bytes)? => decode_entry(key, bytes).map(Some),
            _ => Ok(None),
        }
    }

    async fn begin(&self, key: &str, lease: Option<(u64, Duration)>) -> Result<(Ticket, Lease)> {
        self.in_current_epoch(|| async {
            let (session, mut conn) = self.connect().await?;
            let mut invocation = BEGIN.prepare_invoke();
            invocation
                .key(self.keys.sequence())
                .key(self.keys.lease(key))
                .key(self.keys.epoch())
                .key(self.keys.data(key));
            match lease {
                Some((holder, ttl)) => invocation.arg(holder).arg(ttl::redis_millis(ttl)),
                None => invocation.arg("").arg(1),
            };
            invocation.arg(entry::generation_text(session.floor));
            let (seq, time_ms, leased, entry): (u64, u64, u8, Option<Vec<u8>>) = self
                .round_trip(&session, invocation.invoke_async(&mut conn))
                .await?;
            let lease = match (leased, entry) {
                (2, Some(entry)) => Lease::Cached(decode_entry(key, entry)?),
                (1, _) => Lease::Granted,
                _ => Lease::Busy,
            };
            Ok((Ticket::new(seq, time_ms, session.floor), lease))
        })
        .await
    }

    async fn put_fenced(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
        ticket: Ticket,
        lease_holder: Option<u64>,
    ) -> Result<Fenced> {
        self.store(key, value, deps, ttl, Some((ticket, lease_holder)))
            .await
    }

    async fn release_lease(&self, key: &str, holder: u64) -> Result<()> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(self.keys.lease(key)).arg(holder);
        let (session, mut conn) = self.connect().await?;
        self.round_trip(&session, invocation.invoke_async::<()>(&mut conn))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let (session, mut conn) = self.connect().await?;
        let removed: u64 = self
            .round_trip(&session, conn.unlink(self.keys.data(key)))
            .await?;
        Ok(removed > 0)
    }

    async fn invalidate(&self, deps: &[Dep]) -> Result<u64> {
        self.invalidate_all(deps).await
    }

    async fn deps(&self, key: &str) -> Result<Option<Vec<Dep>>> {
        let mut invocation = DEPS.prepare_invoke();
        invocation.key(self.keys.data(key));
        let (session, mut conn) = self.connect().await?;
        let head: Option<Vec<u8>> = self
            .round_trip(&session, invocation.invoke_async(&mut conn))
            .await?;
        let Some(bytes) = head else {
            return Ok(None);
        };
        let entry = StoredEntry::parse(key, &bytes)?;
        if !session.holds(key, &bytes)? {
            return Ok(None);
        }
        parse_deps(key, entry.deps_json).map(Some)
    }

    async fn prune(&self) -> Result<PruneReport> {
        let report = self.prune_with_progress(|_| {}).await?;
        debug!(?report, "pruned the dependency index");
        Ok(report)
    }
}

//! The Redis backend: entries and their dependency indexes in a Redis server, or spread over
//! a Redis Cluster, shared by every process.
//!
//! Key layout: see the crate README and the private `keys` module. In short, each entry is
//! one string with a TTL (its generation, format and dependencies in front of the value:
//! [`StoredEntry`]), each dependency one index hash per shard `cache key -> generation`
//! without a TTL, and the keys of one shard share the shard's hash tag (on one server there
//! is one shard, tagged with the prefix). The cluster design: `docs/cluster.md`.
//!
//! The modules, in the order a request meets them:
//!
//! - `builder`: options, then connect, check every master, handshake every shard.
//! - `router`: which server serves a shard, and the one place where redirects, `NOSCRIPT`,
//!   epoch refusals and timeouts are handled (`RedisBackend::send`).
//! - `connection`: one server's multiplexed connection, reconnected on demand, with the shard
//!   epochs handshaken on it.
//! - `keys`: the layout (shards, tags, key names); `entry`: the stored entry's format.
//! - this file: the operations; `invalidate`: invalidation in bounded steps; `inspect`:
//!   stats, dependents and prune; `pruner` and `repair`: the background tasks;
//!   `registrations`: the directory bits this process already set; `scripts`: the Lua, one
//!   file per script beside this one.
//!
//! | operation | round trips | how |
//! | --- | --- | --- |
//! | `get` | 1 | `GET` |
//! | `get_many` | 1 | one `MGET` per shard, all at once |
//! | `has` | 1 | `has.lua`: the generation (an entry from before a restart is a miss), and for an entry with a fallback window whether it is still fresh |
//! | `put` | 1 (cluster, first put of a dependency in a shard: 2) | `put.lua`: entry and index members together (on a cluster, `SETBIT`s registering its shard at other home shards go first, the first time: `registrations`) |
//! | `begin` | 1 | `begin.lua` (on a cluster, with a `GET` of the ticket counter, at once) |
//! | fenced put | 1 (cluster: 2) | on a cluster, `register.lua` at other home shards first |
//! | `delete` | 1 | `UNLINK` (index members reclaimed later) |
//! | `deps` | 1 | `deps.lua`: the entry's header and dependency list, not its value |
//! | `invalidate` | 1 without dependents | `invalidate.lua` marks the fence table |
//! | | 2 up to `batch_size` dependents | `invalidate.lua`, then `drop.lua` |
//! | | beyond that, per 256 dependencies: 1 + pipelined `HSCAN` rounds + 1 per `batch_size` | see `invalidate.rs` |
//! | | cluster: 2 more, and 1 at each home | the ticket counter twice, `home.lua`, then the above per shard (without dependents: the counter once, then `home.lua`) |
//!
//! Up to `batch_size` dependents (1,000 by default) of up to 256 dependencies, an
//! invalidation is atomic per shard: its dependents there disappear together. Beyond that
//! they are dropped in atomic batches so that Redis is never blocked for long; `invalidate`
//! returns when all of them are gone, and entries re-cached while it runs are not deleted by
//! it. If it fails half-way (connection loss), the remaining dependents are still in the
//! index and calling it again drops them.
//!
//! **Fencing.** An invalidation records its mark (a value of the ticket counter) in a
//! fixed-size fence table per shard (`{tag}:f`, 16,384 buckets on one shard, `16,384 / S` but
//! at least 1,024 for `S` shards; one per hash of the dependency); a fenced put whose ticket
//! is older than a mark of its dependencies' buckets stores nothing. Sharing buckets only
//! ever refuses a put needlessly (a miss). Nothing per dependency outlives an invalidation,
//! however many distinct dependencies are invalidated.
//!
//! **Eviction.** Entries always have a TTL; indexes never do. At connect the backend reads
//! `maxmemory-policy` on every master and refuses `allkeys-*` policies, which could evict an
//! index while its entries live and so lose invalidations. `noeviction` and every `volatile-*`
//! policy are safe: the latter evict entries only.
//!
//! **Garbage.** Members of entries that expired, were evicted, deleted, replaced, or
//! invalidated through another dependency are left in the index at first (removing them
//! eagerly would cost a read before every write). Invalidation removes the members it visits,
//! and [`prune`](crate::MatroskaCache::prune) walks every index in bounded batches and removes
//! the rest, so after a prune the index holds only live entries. A background task prunes
//! every ten minutes by default ([`RedisBackendBuilder::auto_prune`]), each shard by one
//! process at a time.

mod breaker;
mod builder;
mod connection;
mod entry;
mod inspect;
mod invalidate;
mod keys;
mod pruner;
mod registrations;
mod repair;
mod router;
mod scripts;
#[cfg(feature = "tls")]
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use router::{Invocation, Router};
use scripts::{BEGIN, DEPS, DIRECTORY_BITS, DIRECTORY_VERSION, HAS, PRUNE, PUT, REGISTER, RELEASE};
use tracing::debug;

pub use builder::{redact_url, RedisBackendBuilder, DEFAULT_CLUSTER_SHARDS};
pub use entry::StoredEntry;
pub use inspect::{PrefixStats, ServerStats};
pub(crate) use keys::KeySpace;

use super::{Backend, Fenced, Lease, PruneReport, Ticket, Want};
use crate::codec::Encoded;
use crate::dep::Dep;
use crate::error::{Error, Result};
use crate::ttl;

/// The default time one operation may take before it fails with [`Error::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default interval of the background prune.
pub const DEFAULT_AUTO_PRUNE: Duration = Duration::from_secs(600);
/// The default number of members an invalidation or prune handles per atomic batch.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Consecutive timeouts or connection failures that open a server's circuit breaker, by
/// default.
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// How long a server's circuit breaker stays open before a call probes it, by default.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);

/// A backend that keeps entries in Redis (one server or a Redis Cluster), shared by every
/// process that uses the same prefix.
///
/// Cheap to clone: clones share one multiplexed connection per server, which reconnects by
/// itself (and handshakes each shard's epoch before it serves it: see the crate README on
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
    router: Arc<Router>,
    /// The prefix as given, for the metrics label.
    prefix: Arc<str>,
    timeout: Duration,
    batch_size: usize,
    max_ticket_age: Duration,
    /// `WAIT` for this many replicas, this long, after each invalidation.
    require_replicas: Option<(usize, Duration)>,
    /// When servers' circuit breakers open (`None`: never).
    breaker: Option<breaker::Settings>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .field("shards", &self.router.layout().len())
            .field("cluster", &self.router.is_cluster())
            .field("timeout", &self.timeout)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// The keys of the shard that holds `key`, and its number.
    fn shard_of(&self, key: &str) -> (usize, &KeySpace) {
        let layout = self.router.layout();
        let shard = layout.shard_of(key);
        (shard, layout.shard(shard))
    }

    /// Stores an entry: `put.lua` in its shard, plain or with `fence` fenced. With several
    /// shards, the entry's shard is also registered in the directory of each dependency at
    /// its home: by `put.lua` itself for dependencies homed in the entry's shard; for the
    /// others before it, by `directory_bits.lua` (plain) or by `register.lua` (fenced: a
    /// registration that finds an invalidation refuses the put), so that an entry that
    /// exists is always reachable from its directories. A plain put skips the registrations
    /// this process already made under the shard's directory version (see
    /// `registrations.rs` and `docs/cluster.md`).
    async fn store(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
        fence: Option<(Ticket, Option<u64>)>,
    ) -> Result<Fenced> {
        // A repair pass renews each shard's version once; a put refused more often than
        // this is in a cluster whose epochs keep changing.
        const ATTEMPTS: usize = 4;
        let ttl = ttl::millis(ttl::check(ttl)?);
        let tail = entry::tail(&value, &deps_json(deps));
        let (shard, _) = self.shard_of(key);
        for _ in 0..ATTEMPTS {
            match self.store_once(key, &tail, deps, ttl, fence, shard).await? {
                Some(outcome) => return Ok(outcome),
                None => self.read_directory_version(shard).await?,
            }
        }
        Err(Error::Redis(crate::error::ServerError::cluster(
            "TRYAGAIN",
            "the shard's directory version kept changing under the put",
        )))
    }

    /// One attempt of [`store`](Self::store); `None` when `put.lua` found another directory
    /// version than the one read before registering (nothing was stored).
    async fn store_once(
        &self,
        key: &str,
        tail: &[u8],
        deps: &[Dep],
        ttl: u64,
        fence: Option<(Ticket, Option<u64>)>,
        shard: usize,
    ) -> Result<Option<Fenced>> {
        let layout = self.router.layout();
        let keys = layout.shard(shard);
        let registrations = &self.router.registrations;
        // Read before any registration is sent: see registrations.rs.
        let seen = (layout.len() > 1).then(|| registrations.seen(shard));
        // Dependencies by home shard, other than the entry's own, not registered yet.
        let mut homes: BTreeMap<usize, Vec<&Dep>> = BTreeMap::new();
        let mut local: Vec<&Dep> = Vec::new();
        if let Some(seen) = &seen {
            for dep in deps {
                match layout.home_of(dep) {
                    home if home == shard => local.push(dep),
                    // Plain puts only: see registrations.rs.
                    _ if fence.is_none() && registrations.is_registered(seen, shard, dep) => {}
                    home => homes.entry(home).or_default().push(dep),
                }
            }
        }
        // Registering comes first, fenced or not: an entry that exists is always in the
        // directories of its dependencies, even when the put fails later (a registration
        // without its entry only sends an invalidation to a shard that answers 0).
        if !homes.is_empty() && !self.register(shard, &homes, fence.map(|(t, _)| t)).await? {
            if let Some((_, Some(holder))) = fence {
                self.release_lease(key, holder).await?;
            }
            return Ok(Some(Fenced::Invalidated));
        }
        let version = seen.as_ref().map_or("", |seen| seen.version.as_str());
        let put = |floor: u64| {
            let mut invocation = Invocation::new(&PUT);
            invocation
                .key(keys.sequence())
                .key(keys.epoch())
                .key(keys.data(key))
                .key(keys.fences())
                .key(keys.lease(key))
                .key(keys.ticket_floor())
                .key(keys.directory_version());
            for dep in deps {
                invocation.key(keys.index(dep));
            }
            for dep in &local {
                invocation.key(keys.directory(dep));
            }
            invocation
                .arg(key)
                .arg(ttl)
                .arg(tail)
                .arg(floor)
                .arg(deps.len())
                .arg(shard)
                .arg(version);
            match fence {
                Some((ticket, holder)) => invocation
                    .arg(ticket.seq())
                    .arg(ticket.time_ms())
                    .arg(ttl::redis_millis(self.max_ticket_age))
                    .arg(holder.map(|h| h.to_string()).unwrap_or_default())
                    .arg(
                        deps.iter()
                            .map(|d| layout.fence_bucket(d))
                            .collect::<Vec<_>>(),
                    ),
                None => invocation.arg(""),
            };
            invocation.into()
        };
        let (outcome, _): (i8, u64) = self.send(shard, put).await?;
        if outcome == -2 {
            return Ok(None);
        }
        if let Some(seen) = &seen {
            // The bits are set, and the shard still had the version read before them.
            for dep in homes.values().flatten() {
                registrations.record(seen, shard, dep);
            }
        }
        Ok(Some(match outcome {
            1 => Fenced::Stored,
            0 => Fenced::Invalidated,
            _ => Fenced::Expired,
        }))
    }

    /// Registers `shard` in the directories of `homes`' dependencies, at each home at once:
    /// with a ticket, `register.lua`, which refuses (`false`) when one of them was
    /// invalidated after the ticket was taken or is being invalidated; without,
    /// `directory_bits.lua`.
    async fn register(
        &self,
        shard: usize,
        homes: &BTreeMap<usize, Vec<&Dep>>,
        ticket: Option<Ticket>,
    ) -> Result<bool> {
        let layout = self.router.layout();
        let requests = homes.iter().map(|(&home, deps)| {
            let keys = layout.shard(home);
            let request: router::Request = match ticket {
                Some(ticket) => {
                    let mut invocation = Invocation::new(&REGISTER);
                    invocation.key(keys.ticket_floor()).key(keys.fences());
                    for dep in deps {
                        invocation.key(keys.directory(dep));
                    }
                    invocation.arg(ticket.seq()).arg(shard).arg(
                        deps.iter()
                            .map(|d| layout.fence_bucket(d))
                            .collect::<Vec<_>>(),
                    );
                    invocation.into()
                }
                None => {
                    let mut invocation = Invocation::new(&DIRECTORY_BITS);
                    for dep in deps {
                        invocation.key(keys.directory(dep)).arg(shard);
                    }
                    invocation.into()
                }
            };
            (home, request)
        });
        // `directory_bits.lua` always answers 0; only `register.lua` refuses.
        let registered: Vec<(u8, u64)> = self.send_all(requests.collect()).await?;
        Ok(ticket.is_none() || registered.iter().all(|(ok, _)| *ok == 1))
    }

    /// Reads `shard`'s directory version after `put.lua` refused the one this process knew
    /// (a repair pass renewed it, or its epoch did); creates it if it is missing.
    async fn read_directory_version(&self, shard: usize) -> Result<()> {
        let keys = self.router.layout().shard(shard);
        let (version, _): (Option<String>, u64) = self
            .send(shard, |_| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(keys.directory_version());
                cmd.into()
            })
            .await?;
        let version = match version {
            Some(version) => version,
            None => {
                self.send(shard, |_| {
                    let mut invocation = Invocation::new(&DIRECTORY_VERSION);
                    invocation.key(keys.directory_version());
                    invocation.into()
                })
                .await?
                .0
            }
        };
        debug!(shard, %version, "directory version renewed");
        self.router.registrations.learn(shard, &version);
        Ok(())
    }

    /// Prunes `indexes` of `shard` (each with the members to check) in one atomic step:
    /// removes members whose entries are gone.
    async fn prune_batch(
        &self,
        shard: usize,
        indexes: &[(&str, Vec<(String, u64)>)],
    ) -> Result<u64> {
        let keys = self.router.layout().shard(shard);
        let (removed, _) = self
            .send(shard, |_| {
                let mut invocation = Invocation::new(&PRUNE);
                for (index, _) in indexes {
                    invocation.key(*index);
                }
                invocation.arg(indexes.len());
                for (position, (_, members)) in indexes.iter().enumerate() {
                    for (key, generation) in members {
                        invocation.key(keys.data(key));
                        invocation
                            .arg(position + 1)
                            .arg(key)
                            .arg(entry::generation_text(*generation));
                    }
                }
                invocation.into()
            })
            .await?;
        Ok(removed)
    }

    /// One `HSCAN` step over `index` of `shard`: the next cursor and the `(cache key,
    /// generation)` pairs. Members that are not ours (non-UTF-8 names, non-numeric
    /// generations) are skipped.
    async fn scan_index(
        &self,
        shard: usize,
        index: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<(String, u64)>)> {
        let ((next, flat), _): ((u64, Vec<Vec<u8>>), u64) = self
            .send(shard, |_| {
                let mut cmd = redis::cmd("HSCAN");
                cmd.arg(index).arg(cursor).arg("COUNT").arg(self.batch_size);
                cmd.into()
            })
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

/// The value of a stored entry laid out as `layout`, moved to the front of the buffer
/// (cheaper than splitting a `Bytes`, which allocates).
fn value_at(mut stored: Vec<u8>, layout: entry::Layout) -> Encoded {
    stored.drain(..layout.value_start);
    Encoded::new(layout.format, stored).with_freshness(layout.freshness)
}

/// Whether the stored entry `bytes` (or its first 20 bytes) was written in the epoch whose
/// floor is `floor`; one from before a restart reads as a miss.
fn holds(floor: u64, key: &str, bytes: &[u8]) -> Result<bool> {
    Ok(entry::generation(key, bytes)? >= floor)
}

/// The value of a stored entry read with the epoch floor `floor`, or `None` if there is none
/// in that epoch.
fn stored_value(floor: u64, key: &str, stored: Option<Vec<u8>>) -> Result<Option<Encoded>> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let layout = entry::layout(key, &stored)?;
    if !holds(floor, key, &stored)? {
        return Ok(None); // from before a restart: see connection.rs
    }
    Ok(Some(value_at(stored, layout)))
}

/// Parses a stored entry into its value and dependencies.
fn decode_entry(key: &str, bytes: Vec<u8>) -> Result<(Encoded, Vec<Dep>)> {
    let deps = parse_deps(key, StoredEntry::parse(key, &bytes)?.deps_json)?;
    let layout = entry::layout(key, &bytes)?;
    Ok((value_at(bytes, layout), deps))
}

impl Backend for RedisBackend {
    fn label(&self) -> &str {
        &self.prefix
    }

    fn breaker_openings(&self) -> u64 {
        self.breaker.as_ref().map_or(0, |settings| {
            settings.openings.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Encoded>> {
        let (shard, keys) = self.shard_of(key);
        let (stored, floor): (Option<Vec<u8>>, u64) = self
            .send(shard, |_| {
                redis::cmd("GET").arg(keys.data(key)).clone().into()
            })
            .await?;
        stored_value(floor, key, stored)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Encoded>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One MGET per shard (a cluster refuses keys of several slots in one), all at once.
        let layout = self.router.layout();
        let mut by_shard: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, key) in keys.iter().enumerate() {
            by_shard.entry(layout.shard_of(key)).or_default().push(i);
        }
        let requests = by_shard
            .iter()
            .map(|(&shard, positions)| {
                let shard_keys = layout.shard(shard);
                let mut cmd = redis::cmd("MGET");
                for &i in positions {
                    cmd.arg(shard_keys.data(keys[i]));
                }
                (shard, cmd.into())
            })
            .collect();
        let replies: Vec<(Vec<Option<Vec<u8>>>, u64)> = self.send_all(requests).await?;
        let mut found: Vec<Option<Encoded>> = vec![None; keys.len()];
        for ((_, positions), (stored, floor)) in by_shard.iter().zip(replies) {
            for (&i, stored) in positions.iter().zip(stored) {
                found[i] = stored_value(floor, keys[i], stored)?;
            }
        }
        Ok(found)
    }

    async fn has(&self, key: &str) -> Result<bool> {
        // The generation, to tell an entry of this epoch from one a restart brought back
        // (empty if there is no fresh entry).
        let (shard, keys) = self.shard_of(key);
        let now = entry::instant_text(ttl::now_ms());
        let (head, floor): (Vec<u8>, u64) = self
            .send(shard, |_| {
                let mut invocation = Invocation::new(&HAS);
                invocation.key(keys.data(key)).arg(&now);
                invocation.into()
            })
            .await?;
        Ok(!head.is_empty() && holds(floor, key, &head)?)
    }

    async fn put(&self, key: &str, value: Encoded, deps: &[Dep], ttl: Duration) -> Result<()> {
        self.store(key, value, deps, ttl, None).await.map(|_| ())
    }

    async fn get_with_deps(&self, key: &str) -> Result<Option<crate::backend::EntryWithDeps>> {
        let (shard, keys) = self.shard_of(key);
        let (stored, floor): (Option<Vec<u8>>, u64) = self
            .send(shard, |_| {
                redis::cmd("GET").arg(keys.data(key)).clone().into()
            })
            .await?;
        match stored {
            Some(bytes) if holds(floor, key, &bytes)? => decode_entry(key, bytes).map(Some),
            _ => Ok(None),
        }
    }

    async fn begin(
        &self,
        key: &str,
        lease: Option<(u64, Duration)>,
        want: Want,
    ) -> Result<(Ticket, Lease)> {
        let (now, field) = match want {
            Want::Fresh(now) => (now, 0),
            Want::NotDue(now) => (now, 1),
        };
        let now = entry::instant_text(now);
        let (shard, keys) = self.shard_of(key);
        let begin = self.send(shard, |floor| {
            let mut invocation = Invocation::new(&BEGIN);
            invocation
                .key(keys.sequence())
                .key(keys.lease(key))
                .key(keys.epoch())
                .key(keys.data(key));
            match lease {
                Some((holder, ttl)) => invocation.arg(holder).arg(ttl::redis_millis(ttl)),
                None => invocation.arg("").arg(1),
            };
            invocation
                .arg(entry::generation_text(floor))
                .arg(&now)
                .arg(field);
            invocation.into()
        });
        type Begun = (u64, u64, u8, Option<Vec<u8>>);
        let ((seq, time_ms, leased, entry), floor): (Begun, u64) =
            if self.router.layout().len() == 1 {
                begin.await?
            } else {
                // The ticket comes from the cache's ticket counter (shard 0's), read at the
                // same time: an invalidation in any shard marks with that counter.
                let counter = self.router.layout().shard(0).sequence();
                let (begun, seq) = futures_util::future::join(
                    begin,
                    self.send::<Option<u64>>(0, |_| redis::cmd("GET").arg(&counter).clone().into()),
                )
                .await;
                let ((_, time_ms, leased, entry), floor) = begun?;
                ((seq?.0.unwrap_or(0), time_ms, leased, entry), floor)
            };
        let lease = match (leased, entry) {
            (2, Some(entry)) => Lease::Cached(decode_entry(key, entry)?),
            (1, _) => Lease::Granted,
            _ => Lease::Busy,
        };
        Ok((Ticket::new(seq, time_ms, floor), lease))
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
        let (shard, keys) = self.shard_of(key);
        let ((), _) = self
            .send(shard, |_| {
                let mut invocation = Invocation::new(&RELEASE);
                invocation.key(keys.lease(key)).arg(holder);
                invocation.into()
            })
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let (shard, keys) = self.shard_of(key);
        let (removed, _): (u64, u64) = self
            .send(shard, |_| {
                redis::cmd("UNLINK").arg(keys.data(key)).clone().into()
            })
            .await?;
        Ok(removed > 0)
    }

    async fn invalidate(&self, deps: &[Dep]) -> Result<u64> {
        let (dropped, written) = self.invalidate_all(deps).await?;
        if let Some((replicas, timeout)) = self.require_replicas {
            self.wait_for_replicas(replicas, timeout, &written).await?;
        }
        Ok(dropped)
    }

    async fn deps(&self, key: &str) -> Result<Option<Vec<Dep>>> {
        let (shard, keys) = self.shard_of(key);
        let (head, floor): (Option<Vec<u8>>, u64) = self
            .send(shard, |_| {
                let mut invocation = Invocation::new(&DEPS);
                invocation.key(keys.data(key));
                invocation.into()
            })
            .await?;
        let Some(bytes) = head else {
            return Ok(None);
        };
        let entry = StoredEntry::parse(key, &bytes)?;
        if !holds(floor, key, &bytes)? {
            return Ok(None);
        }
        parse_deps(key, entry.deps_json).map(Some)
    }

    async fn prune(&self) -> Result<PruneReport> {
        let report = self.prune_with_progress(|_| {}).await?;
        tracing::debug!(?report, "pruned the dependency index");
        Ok(report)
    }
}

//! The in-process backend: moka for the entries, a concurrent reverse index for the
//! dependencies.
//!
//! Why moka: it gives a bounded, concurrent cache with TinyLFU admission (it keeps the entries
//! worth keeping), per-entry TTL and weights, all well tested. What it does not give is a
//! dependency index, and its eviction listener runs late (during housekeeping), so the index
//! cannot simply mirror moka's contents. Instead every `put` gets a *generation*, the index
//! maps `dep -> key -> generation`, and every removal checks the generation:
//! - `invalidate` removes an entry only if it still holds the generation the index recorded,
//!   so an entry re-cached while an invalidation runs is not deleted by it;
//! - the eviction listener (expiry, eviction, replacement, deletion) removes index members only
//!   if they still name the removed generation, however late it runs;
//! - a `put` writes its index members inside moka's per-key critical section, before the
//!   entry, so concurrent puts of one key cannot leave the index naming the loser, and the
//!   listener always finds the members of what it removes.
//!
//! Every write of an entry goes through moka's `and_compute_with`, which serializes all
//! operations on one key: the generation check and the removal are one atomic step.
//! The index is never locked while moka is called (moka may run the listener, which locks the
//! index), which rules out deadlocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use moka::Expiry;

use super::{Backend, Fenced, Lease, PruneReport, Ticket, Want, DEFAULT_MAX_TICKET_AGE};
use crate::codec::Encoded;
use crate::dep::Dep;
use crate::error::{Error, Result};
use crate::ttl;

/// The default bound: 128 MiB of keys, values and dependency texts.
pub const DEFAULT_MAX_WEIGHT: u64 = 128 * 1024 * 1024;

/// How many entries an invalidation drops between two yields to the executor.
const YIELD_EVERY: usize = 1_000;

/// Bytes counted per entry on top of its key, value and dependencies.
const ENTRY_OVERHEAD: u64 = 96;

/// The hasher of every map here: keyed per process like std's SipHash (hostile keys cannot
/// aim for collisions), and several times faster on the short keys a cache sees.
type Hasher = ahash::RandomState;

/// `dep -> key -> generation`.
type Index = DashMap<Dep, HashMap<Arc<str>, u64, Hasher>, Hasher>;

/// `(key, generation)` pairs copied out of one index.
type Members = Vec<(Arc<str>, u64)>;

/// What fencing needs to know of a dependency's invalidations.
struct Mark {
    /// The generation at which the last invalidation of this dependency began or ended.
    seq: u64,
    /// Invalidations of this dependency running now.
    running: u32,
    /// When `seq` was last set, to forget marks no ticket can predate any more.
    at: Instant,
}

struct Entry {
    generation: u64,
    value: Encoded,
    deps: Box<[Dep]>,
    ttl: Duration,
}

impl Entry {
    fn weight(&self, key: &str) -> u32 {
        let deps: usize = self.deps.iter().map(|d| d.as_str().len() + 16).sum();
        let total = ENTRY_OVERHEAD + (key.len() + self.value.bytes.len() + deps) as u64;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Per-entry TTL for moka.
struct EntryTtl;

impl Expiry<Arc<str>, Arc<Entry>> for EntryTtl {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        entry: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Removes `key`'s member from `dep`'s index if it still names `generation`.
fn unlink(index: &Index, dep: &Dep, key: &str, generation: u64) {
    index.remove_if_mut(dep, |_, members| {
        if members.get(key) == Some(&generation) {
            members.remove(key);
        }
        members.is_empty()
    });
}

/// An in-process backend: bounded, with per-entry TTL and a dependency index.
///
/// Cheap to clone; clones share the entries. Invalidation is visible to every clone as soon as
/// `invalidate` returns.
///
/// ```
/// use matroska_cache::{MatroskaCache, MemoryBackend};
///
/// let backend = MemoryBackend::builder().max_entries(10_000).build()?;
/// let cache = MatroskaCache::new(backend);
/// # Ok::<(), matroska_cache::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    entries: Cache<Arc<str>, Arc<Entry>, Hasher>,
    index: Arc<Index>,
    generation: Arc<AtomicU64>,
    /// Invalidation marks by a hash of the dependency (keyed randomly per backend: no one can
    /// choose texts that share one). Two dependencies sharing a hash only make a fenced put be
    /// refused needlessly, and a mark costs the same whatever its dependency's length: one
    /// for each dependency invalidated in the last `max_ticket_age`.
    marks: Arc<DashMap<u64, Mark, Hasher>>,
    mark_hasher: Hasher,
    /// Fenced puts hold it shared while they check marks and store; an invalidation holds it
    /// exclusively while it sets its marks. So a fenced put either completes before the
    /// invalidation's snapshot (and is dropped by it) or sees its marks (and stores nothing).
    /// A std lock: it is never held across an `.await`.
    fence: Arc<RwLock<()>>,
    /// Leases on computing a key: holder and expiry. Caches that share this backend (clones of
    /// it in several `MatroskaCache`s) compute a key once, like processes sharing Redis.
    leases: Arc<DashMap<Arc<str>, (u64, Instant), Hasher>>,
    /// The zero of ticket times.
    epoch: Instant,
    max_ticket_age: Duration,
    /// Invalidations since marks and leases were last reclaimed (see [`Self::reclaim`]).
    since_reclaim: Arc<AtomicU64>,
}

/// How many invalidations run between two automatic reclaims of old marks and expired
/// leases: one pass over them per this many keeps the cost per invalidation constant.
const RECLAIM_EVERY: u64 = 1_024;

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.entries.entry_count())
            .field("indexes", &self.index.len())
            .finish()
    }
}

/// How big a [`MemoryBackend`] may grow.
#[derive(Clone, Copy, Debug)]
enum Bound {
    Entries(u64),
    Weight(u64),
}

/// Configures a [`MemoryBackend`].
#[derive(Debug)]
#[must_use]
pub struct MemoryBackendBuilder {
    bound: Bound,
    max_ticket_age: Duration,
}

impl MemoryBackendBuilder {
    /// Bound the cache by number of entries. The least valuable entries are evicted first.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.bound = Bound::Entries(entries);
        self
    }

    /// Bound the cache by bytes of keys, values and dependency texts (plus a small per-entry
    /// overhead). The default is [`DEFAULT_MAX_WEIGHT`].
    pub fn max_weight(mut self, bytes: u64) -> Self {
        self.bound = Bound::Weight(bytes);
        self
    }

    /// How old a ticket may be when its fenced put runs (default
    /// [`DEFAULT_MAX_TICKET_AGE`]): a longer computation is
    /// not cached.
    pub fn max_ticket_age(mut self, age: Duration) -> Self {
        self.max_ticket_age = age;
        self
    }

    /// Builds the backend; a bound of zero is an [`Error::InvalidConfig`].
    pub fn build(self) -> Result<MemoryBackend> {
        let index = Arc::new(Index::default());
        let listener_index = Arc::clone(&index);
        let builder = Cache::builder()
            .expire_after(EntryTtl)
            // Runs for expiry, eviction, replacement and explicit removal, possibly late.
            .eviction_listener(move |key: Arc<Arc<str>>, entry: Arc<Entry>, _cause| {
                for dep in entry.deps.iter() {
                    unlink(&listener_index, dep, &key, entry.generation);
                }
            });
        let entries = match self.bound {
            Bound::Entries(0) | Bound::Weight(0) => {
                return Err(Error::InvalidConfig(
                    "the memory backend's bound must be above zero".into(),
                ))
            }
            Bound::Entries(n) => builder.max_capacity(n).build_with_hasher(Hasher::new()),
            Bound::Weight(bytes) => builder
                .max_capacity(bytes)
                .weigher(|key: &Arc<str>, entry: &Arc<Entry>| entry.weight(key))
                .build_with_hasher(Hasher::new()),
        };
        Ok(MemoryBackend {
            entries,
            index,
            generation: Arc::new(AtomicU64::new(0)),
            marks: Arc::default(),
            mark_hasher: Hasher::new(),
            fence: Arc::default(),
            leases: Arc::default(),
            epoch: Instant::now(),
            max_ticket_age: self.max_ticket_age,
            since_reclaim: Arc::default(),
        })
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl MemoryBackend {
    /// A builder; the default bound is [`DEFAULT_MAX_WEIGHT`] bytes.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            bound: Bound::Weight(DEFAULT_MAX_WEIGHT),
            max_ticket_age: DEFAULT_MAX_TICKET_AGE,
        }
    }

    /// The number of entries (approximate until pending housekeeping has run).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The number of dependency indexes and of members across them, after running pending
    /// housekeeping (expiry, eviction and their index cleanup).
    pub fn index_size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        let members = self.index.iter().map(|m| m.len() as u64).sum();
        (self.index.len() as u64, members)
    }

    /// A new generation: larger than every earlier one (like Redis's `INCR`).
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Stores an entry (the common part of `put` and `put_fenced`).
    fn store(&self, key: &str, value: Encoded, deps: &[Dep], ttl: Duration) {
        let generation = self.next_generation();
        let key: Arc<str> = Arc::from(key);
        let entry = Arc::new(Entry {
            generation,
            value,
            deps: deps.into(),
            ttl,
        });
        // The index members are written inside moka's per-key critical section, just before
        // the entry: puts of one key are serialized, so the members of the entry that ends up
        // stored are never overwritten by a put that lost the race (which would hide the
        // entry from its dependencies). Writing them before the entry also means the eviction
        // listener, however early it runs, finds them.
        self.entries.entry(Arc::clone(&key)).and_compute_with(|_| {
            for dep in deps {
                self.index
                    .entry(dep.clone())
                    .or_default()
                    .insert(Arc::clone(&key), generation);
            }
            Op::Put(entry)
        });
    }

    /// Ends an invalidation of `deps`: later tickets pass their marks again.
    fn finish_invalidation(&self, deps: &[Dep]) {
        let end = self.next_generation();
        let now = Instant::now();
        for dep in deps {
            if let Some(mut mark) = self.marks.get_mut(&self.mark_of(dep)) {
                mark.seq = end;
                mark.running = mark.running.saturating_sub(1);
                mark.at = now;
            }
        }
    }

    /// Forgets invalidation marks no usable ticket can predate and leases that expired.
    /// Runs on `prune` and, by itself, every [`RECLAIM_EVERY`] invalidations, so one mark
    /// per dependency ever invalidated does not stay forever.
    fn reclaim(&self) {
        let max_age = self.max_ticket_age;
        self.marks
            .retain(|_, mark| mark.running > 0 || mark.at.elapsed() <= max_age);
        let now = Instant::now();
        self.leases.retain(|_, (_, expiry)| *expiry > now);
    }

    /// The mark of `dep` in [`Self::marks`].
    fn mark_of(&self, dep: &Dep) -> u64 {
        self.mark_hasher.hash_one(dep.as_str())
    }

    /// The TTL the entry under `key` was stored with (jitter included), if there is one: what
    /// Redis's `PTTL` tells of an entry there, as it was at the put.
    pub fn stored_ttl(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|entry| entry.ttl)
    }

    /// The generation of the entry under `key`, if any.
    fn generation_of(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|e| e.generation)
    }

    /// Removes the entry under `key` if it holds `generation`; returns whether it did.
    fn remove_generation(&self, key: &Arc<str>, generation: u64) -> bool {
        let result =
            self.entries
                .entry(Arc::clone(key))
                .and_compute_with(|current| match current {
                    Some(e) if e.value().generation == generation => Op::Remove,
                    _ => Op::Nop,
                });
        matches!(result, CompResult::Removed(_))
    }
}

impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Encoded>> {
        Ok(self.entries.get(key).map(|e| e.value.clone()))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Encoded>>> {
        Ok(keys
            .iter()
            .map(|key| self.entries.get(*key).map(|e| e.value.clone()))
            .collect())
    }

    async fn has(&self, key: &str) -> Result<bool> {
        Ok(self
            .entries
            .get(key)
            .is_some_and(|e| Want::fresh().accepts(e.value.freshness.as_ref())))
    }

    async fn put(&self, key: &str, value: Encoded, deps: &[Dep], ttl: Duration) -> Result<()> {
        self.store(key, value, deps, ttl::check(ttl)?);
        Ok(())
    }

    async fn get_with_deps(&self, key: &str) -> Result<Option<super::EntryWithDeps>> {
        Ok(self
            .entries
            .get(key)
            .map(|e| (e.value.clone(), e.deps.to_vec())))
    }

    async fn begin(
        &self,
        key: &str,
        lease: Option<(u64, Duration)>,
        want: Want,
    ) -> Result<(Ticket, Lease)> {
        let seq = self.generation.load(Ordering::SeqCst);
        let ticket = Ticket::new(seq, self.now_ms(), 0);
        let Some((holder, ttl)) = lease else {
            return Ok((ticket, Lease::Granted));
        };
        if let Some(entry) = self.get_with_deps(key).await? {
            if want.accepts(entry.0.freshness.as_ref()) {
                return Ok((ticket, Lease::Cached(entry)));
            }
        }
        let now = Instant::now();
        // `Duration::MAX` means "no limit"; an Instant cannot hold that, 100 years will do.
        let ttl = ttl.min(ttl::MAX_TTL);
        let mut leased = false;
        self.leases
            .entry(Arc::from(key))
            .and_modify(|(current, expiry)| {
                if *expiry <= now {
                    (*current, *expiry, leased) = (holder, now + ttl, true);
                }
            })
            .or_insert_with(|| {
                leased = true;
                (holder, now + ttl)
            });
        Ok((ticket, if leased { Lease::Granted } else { Lease::Busy }))
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
        if let Some(holder) = lease_holder {
            self.leases
                .remove_if(key, |_, (current, _)| *current == holder);
        }
        let ttl = ttl::check(ttl)?;
        let _shared = self.fence.read().unwrap_or_else(PoisonError::into_inner);
        let age = self.now_ms().saturating_sub(ticket.time_ms());
        if u128::from(age) > self.max_ticket_age.as_millis() {
            return Ok(Fenced::Expired);
        }
        for dep in deps {
            if let Some(mark) = self.marks.get(&self.mark_of(dep)) {
                if mark.seq > ticket.seq() || mark.running > 0 {
                    return Ok(Fenced::Invalidated);
                }
            }
        }
        self.store(key, value, deps, ttl);
        Ok(Fenced::Stored)
    }

    async fn release_lease(&self, key: &str, holder: u64) -> Result<()> {
        self.leases
            .remove_if(key, |_, (current, _)| *current == holder);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        // The eviction listener removes the index members.
        Ok(self.entries.remove(key).is_some())
    }

    async fn invalidate(&self, deps: &[Dep]) -> Result<u64> {
        // Members written after this mark belong to puts that started after the invalidation
        // and are left alone. Setting the marks under the exclusive fence makes every fenced
        // put either complete before the snapshot below or see the marks.
        let mark = {
            let _exclusive = self.fence.write().unwrap_or_else(PoisonError::into_inner);
            let mark = self.next_generation();
            let now = Instant::now();
            for dep in deps {
                let mut m = self.marks.entry(self.mark_of(dep)).or_insert(Mark {
                    seq: 0,
                    running: 0,
                    at: now,
                });
                m.seq = mark;
                m.running += 1;
                m.at = now;
            }
            mark
        };
        // Ends the invalidation however this future ends (completed, failed or dropped).
        struct Finish<'a>(&'a MemoryBackend, &'a [Dep]);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.finish_invalidation(self.1);
            }
        }
        let _finish = Finish(self, deps);
        if self.since_reclaim.fetch_add(1, Ordering::Relaxed) % RECLAIM_EVERY == RECLAIM_EVERY - 1 {
            self.reclaim();
        }

        let mut dropped = 0;
        for dep in deps {
            // Members are copied, not taken: a concurrent invalidation of the same dependency
            // must still find them until their entries are gone, or it could return while an
            // entry it should drop is still readable.
            let members: Members = match self.index.get(dep) {
                Some(members) => members
                    .iter()
                    .filter(|(_, g)| **g < mark)
                    .map(|(k, g)| (Arc::clone(k), *g))
                    .collect(),
                None => continue,
            };
            for (n, (key, generation)) in members.into_iter().enumerate() {
                if self.remove_generation(&key, generation) {
                    // The eviction listener has unlinked it from every index.
                    dropped += 1;
                } else {
                    // Garbage (the entry is gone or newer): unlink it here rather than wait.
                    unlink(&self.index, dep, &key, generation);
                }
                if n % YIELD_EVERY == YIELD_EVERY - 1 {
                    // A large fan-out must not hold the executor thread for long. If the
                    // caller drops the future here, the members not yet visited are still in
                    // the index and a new call drops them, as with Redis.
                    tokio::task::yield_now().await;
                }
            }
        }
        Ok(dropped)
    }

    async fn deps(&self, key: &str) -> Result<Option<Vec<Dep>>> {
        Ok(self.entries.get(key).map(|e| e.deps.to_vec()))
    }

    async fn prune(&self) -> Result<PruneReport> {
        self.entries.run_pending_tasks();
        let snapshot: Vec<(Dep, Members)> = self
            .index
            .iter()
            .map(|m| {
                let members = m.value().iter().map(|(k, g)| (Arc::clone(k), *g)).collect();
                (m.key().clone(), members)
            })
            .collect();
        let mut report = PruneReport {
            indexes: snapshot.len() as u64,
            ..PruneReport::default()
        };
        self.reclaim();
        for (dep, members) in snapshot {
            for (key, generation) in members {
                report.members += 1;
                if self.generation_of(&key) != Some(generation) {
                    unlink(&self.index, &dep, &key, generation);
                    report.removed += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Encoded {
        Encoded::encode("k", s).unwrap()
    }

    #[test]
    fn zero_bounds_are_refused() {
        assert!(MemoryBackend::builder().max_entries(0).build().is_err());
        assert!(MemoryBackend::builder().max_weight(0).build().is_err());
    }

    #[tokio::test]
    async fn old_marks_and_leases_are_reclaimed_without_prune() {
        let backend = MemoryBackend::builder()
            .max_ticket_age(Duration::from_millis(1))
            .build()
            .unwrap();
        let lease = Some((1, Duration::from_millis(1)));
        for i in 0..3 * RECLAIM_EVERY {
            backend
                .begin(&format!("k{i}"), lease, Want::fresh())
                .await
                .unwrap();
            backend
                .invalidate(&[crate::dep::id("item", i)])
                .await
                .unwrap();
            if i % 512 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Without the reclaim, one mark per dependency (and one lease per key) would stay.
        assert!(
            backend.marks.len() < 2 * RECLAIM_EVERY as usize,
            "{}",
            backend.marks.len()
        );
        assert!(
            backend.leases.len() < 2 * RECLAIM_EVERY as usize,
            "{}",
            backend.leases.len()
        );
    }

    #[tokio::test]
    async fn eviction_leaves_no_index_members() {
        let backend = MemoryBackend::builder().max_entries(100).build().unwrap();
        let deps = [crate::dep::tag("all"), crate::dep::id("n", 0)];
        for i in 0..5_000 {
            backend
                .put(&format!("k{i}"), value("v"), &deps, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let (_, members) = backend.index_size();
        let live = backend.entries.iter().count() as u64;
        assert!(live <= 100, "{live} entries");
        assert_eq!(members, live * 2, "index members must match live entries");
    }
}

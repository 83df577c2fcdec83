//! Invalidation on Redis: bounded steps, so that Redis never stalls, however many
//! dependencies or dependents one call names; on a cluster, only the shards that hold
//! dependents (see `docs/cluster.md`).
//!
//! In one shard:
//!
//! - Dependencies go in chunks of [`DEPS_PER_CHUNK`]. Each chunk starts with `invalidate.lua`,
//!   which marks the chunk's fence buckets and, when the chunk's indexes hold at most
//!   `batch_size` members, returns them: a dependency without dependents costs this one round
//!   trip and leaves nothing behind.
//! - Larger chunks are walked with `HSCAN`, [`SCANS_PER_ROUND_TRIP`] indexes at a time in one
//!   pipeline, and dropped in atomic batches of at most `batch_size` members with `drop.lua`.
//!   Each batch names only the index keys it touches, and is a sign of life; the last one
//!   ends the chunk's invalidation (see `fence.lua`).
//!
//! A chunk's snapshot generation is taken before its snapshot, so a member written after it
//! (a put that began after this invalidation) is never dropped by it, and a fenced put whose
//! ticket predates the mark is refused. If a call fails half-way, the dependents not yet
//! dropped are still in their indexes and calling it again drops them.
//!
//! With several shards, a chunk takes its mark from the ticket counter, starts at each
//! dependency's home (`home.lua`: mark, and the directory of shards with dependents), runs
//! the steps above in each of those shards without ending them, takes a final mark, and ends
//! the invalidation everywhere it started with that mark.
//!
//! Wherever a chunk started, it counts as running (fenced puts of its dependencies are
//! refused) until it ends there, by its own token (see `fence.lua`). A heartbeat pushes the
//! deadline back at every place it runs, however long it takes; the deadline only ends a
//! chunk whose process died. If a place stopped counting it before it ended there (the
//! process or a server stalled past the deadline), a value computed meanwhile may have been
//! stored: the chunk runs again, which drops it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{Mutex, Notify};

use super::connection::Node;
use super::keys::Layout;
use super::router::{Invocation, Request};
use super::scripts::{DROP, HOME, INVALIDATE, MARK};
use super::{entry, parse_members, RedisBackend};
use crate::dep::Dep;
use crate::error::{Error, Result};
use crate::ttl;

/// Dependencies marked and measured by one `invalidate.lua`: small enough that the script
/// runs for well under a millisecond.
pub(crate) const DEPS_PER_CHUNK: usize = 256;

/// Shards of one master an invalidation works in at a time (one runs while the next waits,
/// so the master never idles between them).
const SHARDS_PER_NODE: usize = 2;

/// `HSCAN`s sent in one pipeline while walking large indexes.
const SCANS_PER_ROUND_TRIP: usize = 16;

/// Runs of one chunk, at most, when each stopped counting as running somewhere before it
/// ended (see [`Run`]): then the call fails with [`Error::Timeout`].
const RUNS: u32 = 3;

/// A member to drop: the position of its index in the chunk, its cache key, and its
/// generation as the entry starts with it (20 digits).
type Member = (usize, String, String);

/// Where a chunk's marks come from.
#[derive(Clone, Copy)]
enum Marks {
    /// One shard: its own counter is the ticket counter; the chunk ends in its last batch.
    Own,
    /// Several shards: this mark, from the ticket counter; the chunk ends later, everywhere
    /// at once.
    Given(u64),
}

impl RedisBackend {
    /// Drops every entry that depends on one of `deps`; returns how many, and the shards it
    /// wrote to (for [`wait_for_replicas`](Self::wait_for_replicas)).
    ///
    /// Chunks run one after the other: running several at once saved little (Redis's own
    /// work dominates) and let a concurrent command wait behind several scripts.
    pub(super) async fn invalidate_all(&self, deps: &[Dep]) -> Result<(u64, BTreeSet<usize>)> {
        let mut dropped = 0;
        let mut written = BTreeSet::new();
        for chunk in deps.chunks(DEPS_PER_CHUNK) {
            dropped += self.invalidate_chunk(chunk, &mut written).await?;
        }
        Ok((dropped, written))
    }

    /// One chunk, run again if it stopped counting as running somewhere before it ended
    /// (see the module documentation); adds the shards it wrote to to `written`.
    async fn invalidate_chunk(&self, deps: &[Dep], written: &mut BTreeSet<usize>) -> Result<u64> {
        let mut dropped = 0;
        for attempt in 1..=RUNS {
            let run = Run::new();
            let (more, shards) = self.run_chunk(&run, deps).await?;
            dropped += more;
            written.extend(shards);
            if !run.lapsed.load(Ordering::SeqCst) {
                return Ok(dropped);
            }
            tracing::warn!(
                attempt,
                deps = deps.len(),
                "an invalidation stopped counting as running before it ended (its process or \
                 a Redis server stalled past the deadline): running it again, so that nothing \
                 computed meanwhile survives"
            );
        }
        Err(Error::Timeout(Duration::from_millis(
            self.running_deadline(),
        )))
    }

    /// One run of a chunk, kept alive by its heartbeat until it ends; how many entries it
    /// dropped, and the shards it wrote to.
    async fn run_chunk(&self, run: &Run, deps: &[Dep]) -> Result<(u64, BTreeSet<usize>)> {
        let stop = Notify::new();
        let work = async {
            let outcome = if self.router.layout().len() == 1 {
                let deps: Vec<&Dep> = deps.iter().collect();
                self.invalidate_in_shard(run, 0, &deps, Marks::Own)
                    .await
                    .map(|(dropped, _)| (dropped, BTreeSet::from([0])))
            } else {
                self.invalidate_sharded(run, deps).await
            };
            stop.notify_one();
            outcome
        };
        let (outcome, ()) = tokio::join!(work, self.heartbeat(run, &stop));
        outcome
    }

    /// Pushes back the deadline of `run` wherever it runs, every fifth of the deadline, until
    /// `stop`. A failed round is not an error: the next one tries again, and a place whose
    /// deadline passed meanwhile says so (`lapsed`).
    async fn heartbeat(&self, run: &Run, stop: &Notify) {
        let every = Duration::from_millis(self.running_deadline() / 5);
        loop {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(every) => {}
            }
            // Held for the whole round: an end never overtakes a sign of life on its way.
            let places = run.places.lock().await;
            let beats: Vec<(usize, Request)> = places
                .iter()
                .map(|(&(shard, token), buckets)| {
                    (shard, self.fence_step(shard, token, buckets, None))
                })
                .collect();
            match self.send_all::<(u64, u8)>(beats).await {
                Ok(replies) => replies
                    .iter()
                    .for_each(|((_, lapsed), _)| run.note(*lapsed)),
                Err(error) => {
                    tracing::debug!(%error, "an invalidation's heartbeat failed; the next one tries again");
                }
            }
        }
    }

    /// `drop.lua` without members at `shard`, for the invalidation `token` in `buckets`: a
    /// sign of life, or with `end` its end there with that final mark.
    fn fence_step(&self, shard: usize, token: u64, buckets: &[u64], end: Option<u64>) -> Request {
        let keys = self.router.layout().shard(shard);
        let mut invocation = Invocation::new(&DROP);
        invocation
            .key(keys.sequence())
            .key(keys.fences())
            .arg(0)
            .arg(u8::from(end.is_some()))
            .arg(self.running_deadline());
        match end {
            Some(mark) => invocation.arg(mark),
            None => invocation.arg(""),
        };
        invocation.arg(token).arg(buckets.len()).arg(buckets);
        invocation.into()
    }

    /// `WAIT`s until `replicas` replicas of each master in `written` (the shards an
    /// invalidation wrote to) acknowledged the writes sent to it so far; every master at
    /// once.
    ///
    /// `WAIT` blocks the connection it is sent on until the replicas acknowledge or the
    /// timeout runs out, so it goes on a connection of its own ([`Node::waiter`]): on the
    /// connection every request shares, a lagging replica stalled every `get` and `put` of
    /// the process on that master. `WAIT` covers the writes of its own connection, so a write
    /// goes first on it (`mark.lua` on the shard's WAIT probe, allow-oom): a master replicates
    /// in order, so once that write is acknowledged, so is everything sent before it on any
    /// connection. One round trip (the write and the `WAIT` in one pipeline).
    ///
    /// [`Node::waiter`]: super::connection::Node::waiter
    pub(super) async fn wait_for_replicas(
        &self,
        replicas: usize,
        timeout: Duration,
        written: &BTreeSet<usize>,
    ) -> Result<()> {
        // One shard per master.
        let mut masters: BTreeMap<String, (Arc<Node>, usize)> = BTreeMap::new();
        for &shard in written {
            let node = self.router.node_of(shard).await?;
            masters
                .entry(node.name().to_owned())
                .or_insert((node, shard));
        }
        let millis = ttl::redis_millis(timeout);
        let limit = timeout + self.timeout;
        let waits = masters.into_values().map(|(node, shard)| async move {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(include_str!("mark.lua"))
                .arg(1)
                .arg(self.router.layout().shard(shard).wait_probe())
                .ignore()
                .cmd("WAIT")
                .arg(replicas)
                .arg(millis);
            let attempt = async {
                let mut conn = node.waiter().await?;
                let (acknowledged,): (usize,) = pipe.query_async(&mut conn).await?;
                Ok::<_, Error>(acknowledged)
            };
            let outcome = match tokio::time::timeout(limit, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout(limit)),
            };
            if outcome.is_err() {
                node.retire_waiter().await;
            }
            outcome
        });
        let fewest = try_join_all(waits)
            .await?
            .into_iter()
            .min()
            .unwrap_or(replicas);
        if fewest < replicas {
            return Err(Error::Replication {
                wanted: replicas,
                acknowledged: fewest,
            });
        }
        Ok(())
    }

    /// How long an invalidation counts as running after its last sign of life: fenced puts
    /// of its dependencies are refused meanwhile. Its heartbeat comes every fifth of this
    /// (a timeout, at least 200 ms), so four heartbeats in a row must fail before it
    /// stops counting; a crashed invalidation stops blocking after that long.
    fn running_deadline(&self) -> u64 {
        ttl::redis_millis(self.timeout.saturating_mul(5).max(Duration::from_secs(1)))
    }

    /// The next value of the ticket counter (shard 0's generation counter).
    async fn next_mark(&self) -> Result<u64> {
        let counter = self.router.layout().shard(0).sequence();
        let (mark, _) = self
            .send(0, |_| {
                let mut invocation = Invocation::new(&MARK);
                invocation.key(&counter);
                invocation.into()
            })
            .await?;
        Ok(mark)
    }

    /// One chunk on a sharded cache: see the module documentation. Returns how many entries
    /// it dropped, and the shards it wrote to: shard 0 (the marks), the homes, the shards
    /// visited.
    async fn invalidate_sharded(&self, run: &Run, deps: &[Dep]) -> Result<(u64, BTreeSet<usize>)> {
        let layout = self.router.layout();
        let mark = self.next_mark().await?;
        let mut homes: BTreeMap<usize, Vec<&Dep>> = BTreeMap::new();
        for dep in deps {
            homes.entry(layout.home_of(dep)).or_default().push(dep);
        }
        let started: Vec<(HomeStarted, u64)> = self
            .send_all(
                homes
                    .iter()
                    .map(|(&home, deps)| {
                        let keys = layout.shard(home);
                        let mut invocation = Invocation::new(&HOME);
                        invocation.key(keys.incomplete()).key(keys.fences());
                        for dep in deps {
                            invocation.key(keys.directory(dep));
                        }
                        for dep in deps {
                            invocation.key(keys.directory_tomb(dep));
                        }
                        invocation
                            .arg(mark)
                            .arg(self.running_deadline())
                            .arg(run.at_homes())
                            .arg(buckets_of(layout, deps));
                        (home, invocation.into())
                    })
                    .collect(),
            )
            .await?;
        for ((&home, deps), ((_, _, _, running), _)) in homes.iter().zip(&started) {
            if *running == 1 {
                run.started(home, run.at_homes(), buckets_of(layout, deps))
                    .await;
            }
        }
        // The shards each dependency has dependents in, by the directories and their
        // tombstones (every shard, for a home whose directories may have lost bits).
        if started
            .iter()
            .any(|((incomplete, _, _, _), _)| *incomplete == 1)
        {
            // A home whose directories may have lost bits: make sure this process helps
            // repair them (the process that began the epoch may be gone).
            self.router.repair_wanted.notify_one();
        }
        let mut shards: BTreeMap<usize, Vec<&Dep>> = BTreeMap::new();
        for ((_, deps), ((incomplete, directories, tombs, _), _)) in homes.iter().zip(&started) {
            for ((dep, bits), tomb) in deps.iter().zip(directories).zip(tombs) {
                let named: BTreeSet<usize> = if *incomplete == 1 {
                    (0..layout.len()).collect()
                } else {
                    shards_in(bits, layout.len())
                        .chain(shards_in(tomb, layout.len()))
                        .collect()
                };
                for shard in named {
                    shards.entry(shard).or_default().push(dep);
                }
            }
        }
        let dropped = self.visit_shards(run, &shards, mark).await?;
        let written: BTreeSet<usize> = std::iter::once(0)
            .chain(homes.keys().copied())
            .chain(shards.keys().copied())
            .collect();
        let ends = run.ending().await;
        if ends.is_empty() {
            return Ok((dropped, written)); // no dependents anywhere: finished at the homes
        }
        // Every dependent is gone: end the invalidation where it runs, above every ticket
        // taken meanwhile (those may have read a dependent not yet dropped).
        let last = self.next_mark().await?;
        let ends = ends
            .iter()
            .map(|(&(shard, token), buckets)| {
                (shard, self.fence_step(shard, token, buckets, Some(last)))
            })
            .collect();
        let ended: Vec<((u64, u8), u64)> = self.send_all(ends).await?;
        ended.iter().for_each(|((_, lapsed), _)| run.note(*lapsed));
        Ok((dropped, written))
    }

    /// Runs the steps in each shard of `shards` (with their dependencies), every master at
    /// once but at most [`SHARDS_PER_NODE`] shards of one master at a time: a fan-out over
    /// many shards of one master would otherwise queue all of them at once on its
    /// connection, and the last ones would wait out their timeout behind the others.
    /// Returns how many entries were dropped.
    async fn visit_shards(
        &self,
        run: &Run,
        shards: &BTreeMap<usize, Vec<&Dep>>,
        mark: u64,
    ) -> Result<u64> {
        let mut groups: Vec<Vec<usize>> = self
            .router
            .masters()
            .await?
            .into_iter()
            .map(|(_, served)| {
                served
                    .into_iter()
                    .filter(|s| shards.contains_key(s))
                    .collect()
            })
            .collect();
        // Shards whose slot has no known master yet: the router finds it (or fails).
        let placed: usize = groups.iter().map(Vec::len).sum();
        if placed < shards.len() {
            let grouped: std::collections::BTreeSet<usize> =
                groups.iter().flatten().copied().collect();
            groups.push(
                shards
                    .keys()
                    .copied()
                    .filter(|s| !grouped.contains(s))
                    .collect(),
            );
        }
        let visits = groups.into_iter().map(|group| {
            futures_util::stream::iter(group)
                .map(move |shard| async move {
                    let deps = &shards[&shard];
                    let (dropped, _) = self
                        .invalidate_in_shard(run, shard, deps, Marks::Given(mark))
                        .await?;
                    Ok::<_, Error>(dropped)
                })
                .buffer_unordered(SHARDS_PER_NODE)
                .try_collect::<Vec<_>>()
        });
        Ok(try_join_all(visits).await?.into_iter().flatten().sum())
    }

    /// The steps in one shard; returns how many entries were dropped and, for
    /// [`Marks::Given`], whether the invalidation still runs there (the caller ends it).
    async fn invalidate_in_shard(
        &self,
        run: &Run,
        shard: usize,
        deps: &[&Dep],
        marks: Marks,
    ) -> Result<(u64, bool)> {
        let layout = self.router.layout();
        let keys = layout.shard(shard);
        let chunk = Chunk {
            run,
            shard,
            indexes: deps.iter().map(|d| keys.index(d)).collect(),
            buckets: buckets_of(layout, deps),
            marks,
        };
        let ((snapshot, sizes, lists, running), _): (Started, u64) = self
            .send(shard, |_| {
                let mut invocation = Invocation::new(&INVALIDATE);
                invocation.key(keys.sequence()).key(keys.fences());
                for index in &chunk.indexes {
                    invocation.key(index);
                }
                invocation.arg(self.batch_size).arg(self.running_deadline());
                match marks {
                    Marks::Own => invocation.arg(""),
                    Marks::Given(mark) => invocation.arg(mark),
                };
                invocation.arg(run.among_dependents()).arg(&chunk.buckets);
                invocation.into()
            })
            .await?;
        if running == 0 {
            return Ok((0, false)); // no dependents: finished in that one round trip
        }
        run.started(shard, run.among_dependents(), chunk.buckets.clone())
            .await;
        let dropped = match lists {
            // Small: the snapshot came with the mark; one more round trip drops it all.
            Some(lists) => {
                let batch: Vec<Member> = lists
                    .into_iter()
                    .enumerate()
                    .flat_map(|(position, flat)| {
                        parse_members(flat)
                            .into_iter()
                            .map(move |(key, generation)| {
                                (position, key, entry::generation_text(generation))
                            })
                    })
                    .collect();
                self.drop_batch(&chunk, &batch, true).await?
            }
            None => self.drop_scanned(&chunk, &sizes, snapshot).await?,
        };
        Ok((dropped, matches!(marks, Marks::Given(_))))
    }

    /// Walks the indexes (those with members) in pipelined `HSCAN` rounds and drops what
    /// they held before `snapshot`, one batch at a time; the last batch ends the
    /// invalidation.
    /// Scanning a hash while members leave it still returns every member that stays.
    async fn drop_scanned(&self, chunk: &Chunk<'_>, sizes: &[u64], snapshot: u64) -> Result<u64> {
        let mut pending: VecDeque<(usize, u64)> = sizes
            .iter()
            .enumerate()
            .filter(|(_, size)| **size > 0)
            .map(|(position, _)| (position, 0))
            .collect();
        let mut dropped = 0;
        let mut batch: Vec<Member> = Vec::new();
        while !pending.is_empty() {
            let round: Vec<(usize, u64)> = pending
                .drain(..pending.len().min(SCANS_PER_ROUND_TRIP))
                .collect();
            let scans = round
                .iter()
                .map(|(position, cursor)| (chunk.indexes[*position].as_str(), *cursor));
            let pages = self.scan_pages(chunk.shard, scans).await?;
            // A key of another type under an index's name holds no member (invalidate.lua's
            // HLEN already refused it: this is never reached with one).
            for ((position, _), page) in round.into_iter().zip(pages) {
                let (next, members) = page.unwrap_or_default();
                for (key, generation) in members {
                    if generation < snapshot {
                        batch.push((position, key, entry::generation_text(generation)));
                    }
                }
                if next != 0 {
                    pending.push_back((position, next));
                }
            }
            while batch.len() >= self.batch_size {
                let rest = batch.split_off(self.batch_size);
                dropped += self.drop_batch(chunk, &batch, false).await?;
                batch = rest;
            }
        }
        Ok(dropped + self.drop_batch(chunk, &batch, true).await?)
    }

    /// Drops one batch of members atomically (`drop.lua`), naming only the indexes it
    /// touches; with `last` and [`Marks::Own`], ends the chunk's invalidation in the same
    /// step (with [`Marks::Given`] the caller ends it, and the batch is a sign of life).
    async fn drop_batch(&self, chunk: &Chunk<'_>, batch: &[Member], last: bool) -> Result<u64> {
        let keys = self.router.layout().shard(chunk.shard);
        let run = chunk.run;
        let finish = last && matches!(chunk.marks, Marks::Own);
        if finish {
            run.ending_at(chunk.shard, run.among_dependents()).await;
        }
        // Positions in the chunk -> positions among the touched indexes (1-based in Lua).
        let mut touched: Vec<usize> = batch.iter().map(|(position, _, _)| *position).collect();
        touched.sort_unstable();
        touched.dedup();
        let ((dropped, lapsed), _): ((u64, u8), u64) = self
            .send(chunk.shard, |_| {
                let mut invocation = Invocation::new(&DROP);
                invocation.key(keys.sequence()).key(keys.fences());
                for &position in &touched {
                    invocation.key(&chunk.indexes[position]);
                }
                invocation
                    .arg(touched.len())
                    .arg(u8::from(finish))
                    .arg(self.running_deadline())
                    .arg("")
                    .arg(run.among_dependents())
                    .arg(chunk.buckets.len())
                    .arg(&chunk.buckets);
                for (position, key, generation) in batch {
                    let local = touched
                        .binary_search(position)
                        .expect("touched holds every position");
                    invocation.key(keys.data(key));
                    invocation.arg(local + 1).arg(key).arg(generation);
                }
                invocation.into()
            })
            .await?;
        run.note(lapsed);
        Ok(dropped)
    }
}

/// The fence bucket of each of `deps`, in the same order.
fn buckets_of(layout: &Layout, deps: &[&Dep]) -> Vec<u64> {
    deps.iter().map(|dep| layout.fence_bucket(dep)).collect()
}

/// One run of a chunk's invalidation: its tokens, the places it counts as running at and has
/// not ended, and whether one of them stopped counting it before it ended there.
struct Run {
    /// Even, random: the token at the dependencies' homes; `token + 1` among their
    /// dependents (a shard may be both, and the two start and end apart there).
    token: u64,
    /// (shard, token) -> the fence buckets it runs in there: the heartbeat's list, and where
    /// a sharded chunk ends. Locked for a whole heartbeat round.
    places: Mutex<BTreeMap<(usize, u64), Vec<u64>>>,
    /// A place had stopped counting the run as running before a sign of life or its end.
    lapsed: AtomicBool,
}

impl Run {
    fn new() -> Run {
        Run {
            token: rand::random::<u64>() & !1,
            places: Mutex::new(BTreeMap::new()),
            lapsed: AtomicBool::new(false),
        }
    }

    /// The token at the dependencies' homes.
    fn at_homes(&self) -> u64 {
        self.token
    }

    /// The token in the shards holding their dependents.
    fn among_dependents(&self) -> u64 {
        self.token + 1
    }

    /// The run counts as running at `shard` under `token`, in `buckets`.
    async fn started(&self, shard: usize, token: u64, buckets: Vec<u64>) {
        self.places.lock().await.insert((shard, token), buckets);
    }

    /// The run is about to end at `shard` under `token`: no heartbeat goes there any more.
    async fn ending_at(&self, shard: usize, token: u64) {
        self.places.lock().await.remove(&(shard, token));
    }

    /// The run is about to end everywhere: the places, which no heartbeat visits any more.
    async fn ending(&self) -> BTreeMap<(usize, u64), Vec<u64>> {
        std::mem::take(&mut *self.places.lock().await)
    }

    /// What `drop.lua` replied about the run's state where it ran.
    fn note(&self, lapsed: u8) {
        if lapsed == 1 {
            self.lapsed.store(true, Ordering::SeqCst);
        }
    }
}

/// The shards set in a directory bitmap (`SETBIT` order: bit 0 is the first byte's highest).
pub(super) fn shards_in(bits: &[u8], shards: usize) -> impl Iterator<Item = usize> + '_ {
    (0..shards).filter(move |s| {
        bits.get(s / 8)
            .is_some_and(|byte| byte & (0x80 >> (s % 8)) != 0)
    })
}

/// What `home.lua` returns: whether the home's directories may miss bits, each
/// dependency's directory and tombstone, and whether the invalidation still runs there.
type HomeStarted = (u8, Vec<Vec<u8>>, Vec<Vec<u8>>, u8);

/// What `invalidate.lua` returns: the snapshot generation, each index's size, the members of
/// every index (flat `HGETALL` replies) when they are few, and whether the invalidation still
/// runs.
type Started = (u64, Vec<u64>, Option<Vec<Vec<Vec<u8>>>>, u8);

/// The dependencies one `invalidate.lua` handles in one shard: their index keys and fence
/// buckets, where the marks come from, and the run it belongs to.
struct Chunk<'a> {
    run: &'a Run,
    shard: usize,
    indexes: Vec<String>,
    buckets: Vec<u64>,
    marks: Marks,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use matroska_test_support::RedisServer;

    use super::*;
    use crate::{dep, MatroskaCache};

    /// The second way in of issue 19, item 3, step by step on one shard: X starts, stalls
    /// past its deadline, Y starts on the same dependency, X ends. X learns that it had
    /// stopped counting (so it runs again), and Y still counts as running: a fenced put
    /// whose ticket is taken after X's end is refused. (With one shared counter, X's end set
    /// it to zero while Y ran.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_end_never_ends_another_invalidation() {
        let server = tokio::task::block_in_place(RedisServer::start);
        let backend = RedisBackend::builder(&server.url(), "runs")
            .timeout(Duration::from_millis(100)) // deadline: max(500 ms, 1 s) = 1 s
            .auto_prune(None)
            .build()
            .await
            .unwrap();
        let cache = MatroskaCache::new(backend.clone());
        let d = dep::tag("hot");
        let ttl = Duration::from_secs(600);
        cache.put("a", &1, [d.clone()], ttl).await.unwrap();
        let (x, y) = (Run::new(), Run::new());
        let start = |run: &Run| {
            let keys = backend.router.layout().shard(0);
            let mut invocation = Invocation::new(&INVALIDATE);
            invocation
                .key(keys.sequence())
                .key(keys.fences())
                .key(keys.index(&d))
                .arg(backend.batch_size)
                .arg(backend.running_deadline())
                .arg("")
                .arg(run.among_dependents())
                .arg(backend.router.layout().fence_bucket(&d));
            Request::from(invocation)
        };
        let buckets = [backend.router.layout().fence_bucket(&d)];
        let (started, _): (Started, u64) = backend.send(0, |_| start(&x)).await.unwrap();
        assert_eq!(started.3, 1, "X runs");
        tokio::time::sleep(Duration::from_millis(backend.running_deadline() + 100)).await;
        let (started, _): (Started, u64) = backend.send(0, |_| start(&y)).await.unwrap();
        assert_eq!(started.3, 1, "Y runs");
        let last = backend.next_mark().await.unwrap();
        let ((_, lapsed), _): ((u64, u8), u64) = backend
            .send(0, |_| {
                backend.fence_step(0, x.among_dependents(), &buckets, Some(last))
            })
            .await
            .unwrap();
        assert_eq!(lapsed, 1, "X stopped counting before it ended");
        // A computation that begins now may read `a`, which Y has not dropped yet.
        let ticket = cache.ticket().await.unwrap();
        assert!(!cache
            .put_fenced("b", &2, [d.clone()], ttl, &ticket)
            .await
            .unwrap());
        // Y's heartbeat keeps it running, and says it still does.
        let ((_, lapsed), _): ((u64, u8), u64) = backend
            .send(0, |_| {
                backend.fence_step(0, y.among_dependents(), &buckets, None)
            })
            .await
            .unwrap();
        assert_eq!(lapsed, 0);
    }

    #[test]
    fn directory_bits_are_read_in_setbit_order() {
        // SETBIT d 0 1, SETBIT d 9 1, SETBIT d 15 1 -> 0x80 0x41
        let bits = [0x80u8, 0x41];
        assert_eq!(shards_in(&bits, 16).collect::<Vec<_>>(), [0, 9, 15]);
        assert_eq!(shards_in(&bits, 9).collect::<Vec<_>>(), [0]);
        assert_eq!(shards_in(&[], 8).count(), 0);
    }
}

//! Looking into a live cache from outside: what depends on a dependency, what a prefix holds,
//! and pruning with progress. Everything walks the keyspace in bounded batches (`SCAN`,
//! `HSCAN`, pipelines of at most `batch_size` commands), so Redis stays responsive however
//! large the cache is. On a cluster, every master is walked once, for all the shards it
//! serves.

use std::collections::BTreeMap;

use redis::Pipeline;

use super::{parse_members, RedisBackend};
use crate::backend::PruneReport;
use crate::dep::Dep;
use crate::error::Result;

/// What a prefix holds, from [`RedisBackend::prefix_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PrefixStats {
    /// Live entries.
    pub entries: u64,
    /// Dependency index keys (on a cluster, one per dependency and shard with dependents).
    pub index_keys: u64,
    /// Members across all indexes.
    pub index_members: u64,
    /// Members whose entry is gone or replaced (what a prune would remove).
    pub garbage: u64,
    /// Bytes used by all keys of the prefix (`MEMORY USAGE`).
    pub memory_bytes: u64,
    /// Keys visited so far (for progress reports).
    pub keys_visited: u64,
    /// How keys and memory spread over the servers: one line per master (`host:port`), in
    /// address order. A standalone server is the one line `standalone`.
    pub servers: Vec<ServerStats>,
}

/// One master's share of a prefix, in [`PrefixStats::servers`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServerStats {
    /// `host:port`, or `standalone`.
    pub server: String,
    /// The shards it serves.
    pub shards: u64,
    /// Keys of the prefix on it.
    pub keys: u64,
    /// Bytes they use.
    pub memory_bytes: u64,
}

/// One page of a node's keys of this cache: each key with its shard.
type KeyPage = Vec<(usize, String)>;

/// An index's members: `(cache key, generation)`.
type Members = Vec<(String, u64)>;

/// `HSCAN` replies: each the next cursor and the flat field/value list, or the error of
/// that one command.
type RawPages = Vec<redis::RedisResult<(u64, Vec<Vec<u8>>)>>;

impl RedisBackend {
    /// One `SCAN` step over the keys of this cache of one type (`"*"` for all) on the server
    /// of `via` (a shard it serves); each key comes with its shard, and only keys of
    /// `shards` are kept (a slot being migrated can leave keys of another server's shard),
    /// of that type by their parsed form: with several shards the pattern (`{p#*}:r:*`)
    /// also matches an entry whose cache key holds `}:r:` (`{p#5}:d:/q=}:r:x`), which is no
    /// index.
    pub(super) async fn scan_keys(
        &self,
        via: usize,
        shards: &[usize],
        kind: &str,
        cursor: u64,
    ) -> Result<(u64, KeyPage)> {
        let layout = self.router.layout();
        let ((next, keys), _): ((u64, Vec<String>), u64) = self
            .send(via, |_| {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(layout.pattern(kind))
                    .arg("COUNT")
                    .arg(self.batch_size);
                cmd.into()
            })
            .await?;
        let page = keys
            .into_iter()
            .filter_map(|key| {
                let (shard, found) = layout.locate(&key)?;
                (shards.contains(&shard) && (kind == "*" || found == kind)).then_some((shard, key))
            })
            .collect();
        Ok((next, page))
    }

    /// One `SCAN` step over the index keys of `shards` on the server of `via`.
    pub(super) async fn scan_index_keys(
        &self,
        via: usize,
        shards: &[usize],
        cursor: u64,
    ) -> Result<(u64, KeyPage)> {
        self.scan_keys(via, shards, "r", cursor).await
    }

    /// One `HSCAN` page of each `(index, cursor)` of the shards served by `via`'s server,
    /// in one round trip: most indexes (one per object) have a handful of members, and one
    /// round trip per index would make walking a large cache take minutes. Each page is the
    /// next cursor and the `(cache key, generation)` pairs, or `None` for a key that is no
    /// hash (`WRONGTYPE`: a key of another type under an index's name), so that one such key
    /// does not fail the others.
    pub(super) async fn scan_pages(
        &self,
        via: usize,
        scans: impl ExactSizeIterator<Item = (&str, u64)>,
    ) -> Result<Vec<Option<(u64, Members)>>> {
        let mut pipe = Pipeline::with_capacity(scans.len());
        pipe.ignore_errors();
        for (index, cursor) in scans {
            pipe.cmd("HSCAN")
                .arg(index)
                .arg(cursor)
                .arg("COUNT")
                .arg(self.batch_size);
        }
        let (pages, _): (RawPages, u64) = self.send(via, |_| pipe.clone().into()).await?;
        pages
            .into_iter()
            .map(|page| match page {
                Ok((cursor, flat)) => Ok(Some((cursor, parse_members(flat)))),
                Err(error) if error.code() == Some("WRONGTYPE") => Ok(None),
                Err(error) => Err(error.into()),
            })
            .collect()
    }

    /// Calls `visit` with every page of members of every index in `indexes` (all on `via`'s
    /// server): first pages pipelined, the rest of a large index one `HSCAN` at a time.
    /// Returns how many of them were not hashes (`WRONGTYPE`: a key of another type under
    /// an index's name), which are skipped: one such key must not stop a walk.
    async fn index_pages<'a>(
        &self,
        via: usize,
        indexes: &'a [(usize, String)],
        mut visit: impl FnMut(usize, &'a str, Vec<(String, u64)>),
    ) -> Result<u64> {
        if indexes.is_empty() {
            return Ok(0);
        }
        let firsts = self
            .scan_pages(via, indexes.iter().map(|(_, index)| (index.as_str(), 0)))
            .await?;
        let mut unreadable = 0;
        for ((shard, index), first) in indexes.iter().zip(firsts) {
            let Some((mut cursor, members)) = first else {
                tracing::warn!(key = %index, "not an index (another type): skipped");
                unreadable += 1;
                continue;
            };
            visit(*shard, index, members);
            while cursor != 0 {
                let (next, members) = self.scan_index(*shard, index, cursor).await?;
                visit(*shard, index, members);
                cursor = next;
            }
        }
        Ok(unreadable)
    }

    /// Which of `members` (cache key, generation) of `shard` still name a live entry.
    async fn live(&self, shard: usize, members: &[(String, u64)]) -> Result<Vec<bool>> {
        let keys = self.router.layout().shard(shard);
        let mut pipe = Pipeline::with_capacity(members.len());
        for (key, _) in members {
            pipe.cmd("GETRANGE")
                .arg(keys.data(key))
                .arg(0)
                .arg(super::entry::GENERATION_WIDTH - 1);
        }
        let (generations, _): (Vec<String>, u64) =
            self.send(shard, |_| pipe.clone().into()).await?;
        Ok(members
            .iter()
            .zip(generations)
            .map(|((_, member), entry)| entry.parse::<u64>().ok() == Some(*member))
            .collect())
    }

    /// How many shards have directories that may miss bits now: shards that began a new
    /// epoch (a restart, a failover) and whose repair has not completed. Invalidations of
    /// dependencies homed there visit every shard until then (see `docs/cluster.md`). Always
    /// 0 for a cache of one shard.
    ///
    /// ```no_run
    /// # async fn demo(backend: matroska_cache::RedisBackend) -> Result<(), matroska_cache::Error> {
    /// if backend.repair_pending().await? > 0 {
    ///     println!("directories are being repaired: invalidations visit every shard");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn repair_pending(&self) -> Result<usize> {
        Ok(self.incomplete_marks().await?.len())
    }

    /// The keys of the live entries that depend on `dep`, in every shard.
    pub async fn dependents(&self, dep: &Dep) -> Result<Vec<String>> {
        let layout = self.router.layout();
        let mut keys = Vec::new();
        for shard in 0..layout.len() {
            let index = layout.shard(shard).index(dep);
            let mut cursor = 0;
            loop {
                let (next, members) = self.scan_index(shard, &index, cursor).await?;
                if !members.is_empty() {
                    let live = self.live(shard, &members).await?;
                    keys.extend(
                        members
                            .into_iter()
                            .zip(live)
                            .filter_map(|((key, _), live)| live.then_some(key)),
                    );
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        keys.sort();
        keys.dedup(); // HSCAN may return a member twice
        Ok(keys)
    }

    /// Counts what the prefix holds, on every master, calling `progress` after each batch
    /// of keys.
    pub async fn prefix_stats(
        &self,
        mut progress: impl FnMut(&PrefixStats) + Send,
    ) -> Result<PrefixStats> {
        let mut stats = PrefixStats::default();
        let cluster = self.router.is_cluster();
        for (node, shards) in self.router.masters().await? {
            let via = shards[0];
            let mut server = ServerStats {
                server: if cluster {
                    node.name().to_owned()
                } else {
                    "standalone".to_owned()
                },
                shards: shards.len() as u64,
                ..ServerStats::default()
            };
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_keys(via, &shards, "*", cursor).await?;
                if !keys.is_empty() {
                    let mut pipe = Pipeline::with_capacity(keys.len());
                    for (_, key) in &keys {
                        pipe.cmd("MEMORY").arg("USAGE").arg(key);
                    }
                    let (sizes, _): (Vec<Option<u64>>, u64) =
                        self.send(via, |_| pipe.clone().into()).await?;
                    let bytes = sizes.into_iter().flatten().sum::<u64>();
                    stats.memory_bytes += bytes;
                    server.memory_bytes += bytes;
                    server.keys += keys.len() as u64;
                }
                let mut indexes = Vec::new();
                for (shard, key) in keys {
                    stats.keys_visited += 1;
                    match self.router.layout().locate(&key).map(|(_, kind)| kind) {
                        Some("d") => stats.entries += 1,
                        Some("r") => indexes.push((shard, key)),
                        _ => {}
                    }
                }
                stats.index_keys += indexes.len() as u64;
                let mut members: BTreeMap<usize, Vec<(String, u64)>> = BTreeMap::new();
                self.index_pages(via, &indexes, |shard, _, page| {
                    members.entry(shard).or_default().extend(page)
                })
                .await?;
                for (shard, members) in members {
                    stats.index_members += members.len() as u64;
                    for chunk in members.chunks(self.batch_size) {
                        let live = self.live(shard, chunk).await?;
                        stats.garbage += live.iter().filter(|l| !**l).count() as u64;
                    }
                }
                progress(&stats);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            stats.servers.push(server);
        }
        Ok(stats)
    }

    /// Like [`MatroskaCache::prune`](crate::MatroskaCache::prune), calling `progress` after
    /// each batch.
    pub async fn prune_with_progress(
        &self,
        progress: impl FnMut(&PruneReport) + Send,
    ) -> Result<PruneReport> {
        let all: Vec<usize> = (0..self.router.layout().len()).collect();
        self.repair_directories().await?;
        self.prune_shards(&all, progress).await
    }

    /// Prunes the indexes of `shards`: on each master, one walk over the keys of the shards
    /// it serves.
    pub(super) async fn prune_shards(
        &self,
        shards: &[usize],
        mut progress: impl FnMut(&PruneReport) + Send,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for (_, served) in self.router.masters().await? {
            let mine: Vec<usize> = served.into_iter().filter(|s| shards.contains(s)).collect();
            let Some(&via) = mine.first() else {
                continue;
            };
            let mut cursor = 0u64;
            loop {
                let (next, index_keys) = self.scan_keys(via, &mine, "r", cursor).await?;
                report.indexes += index_keys.len() as u64;
                // Every index goes to the script, even with no member: it also retires
                // indexes left with nothing but old invalidation marks. Batches hold at most
                // `batch_size` members, and at most `batch_size` indexes, of one shard.
                let mut pages: BTreeMap<usize, Vec<(&str, Members)>> = BTreeMap::new();
                report.unreadable += self
                    .index_pages(via, &index_keys, |shard, index, members| {
                        pages.entry(shard).or_default().push((index, members))
                    })
                    .await?;
                for (shard, pages) in pages {
                    let mut batch: Vec<(&str, Vec<(String, u64)>)> = Vec::new();
                    let mut batch_members = 0;
                    for (index, members) in pages {
                        report.members += members.len() as u64;
                        if !batch.is_empty()
                            && (batch_members + members.len() > self.batch_size
                                || batch.len() >= self.batch_size)
                        {
                            report.removed += self.prune_batch(shard, &batch).await?;
                            progress(&report);
                            batch.clear();
                            batch_members = 0;
                        }
                        batch_members += members.len();
                        batch.push((index, members));
                    }
                    if !batch.is_empty() {
                        report.removed += self.prune_batch(shard, &batch).await?;
                        progress(&report);
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // After the members: a slice left with nothing but garbage is gone by now.
        report.directories = self.prune_directories(shards).await?;
        progress(&report);
        Ok(report)
    }
}

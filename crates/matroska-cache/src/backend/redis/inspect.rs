//! Looking into a live cache from outside: what depends on a dependency, what a prefix holds,
//! and pruning with progress. Everything walks the keyspace in bounded batches (`SCAN`,
//! `HSCAN`, pipelines of at most `batch_size` commands), so Redis stays responsive however
//! large the cache is.

use redis::Pipeline;

use super::{parse_members, RedisBackend};
use crate::backend::PruneReport;
use crate::dep::Dep;
use crate::error::Result;

/// What a prefix holds, from [`RedisBackend::prefix_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PrefixStats {
    /// Live entries.
    pub entries: u64,
    /// Dependency index keys.
    pub index_keys: u64,
    /// Members across all indexes.
    pub index_members: u64,
    /// Members whose entry is gone or replaced (what a prune would remove).
    pub garbage: u64,
    /// Bytes used by all keys of the prefix (`MEMORY USAGE`).
    pub memory_bytes: u64,
    /// Keys visited so far (for progress reports).
    pub keys_visited: u64,
}

impl RedisBackend {
    /// One `SCAN` step over this prefix's keys of one type (`"*"` for all).
    async fn scan_keys(&self, kind: &str, cursor: u64) -> Result<(u64, Vec<String>)> {
        let (session, mut conn) = self.connect().await?;
        self.round_trip(
            &session,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.pattern(kind))
                .arg("COUNT")
                .arg(self.batch_size)
                .query_async(&mut conn),
        )
        .await
    }

    /// One `HSCAN` page of each `(index, cursor)`, in one round trip: most indexes (one per
    /// object) have a handful of members, and one round trip per index would make walking a
    /// large cache take minutes. Each page is the next cursor and the `(cache key,
    /// generation)` pairs.
    pub(super) async fn scan_pages(
        &self,
        scans: impl ExactSizeIterator<Item = (&str, u64)>,
    ) -> Result<Vec<(u64, Vec<(String, u64)>)>> {
        let mut pipe = Pipeline::with_capacity(scans.len());
        for (index, cursor) in scans {
            pipe.cmd("HSCAN")
                .arg(index)
                .arg(cursor)
                .arg("COUNT")
                .arg(self.batch_size);
        }
        let (session, mut conn) = self.connect().await?;
        let pages: Vec<(u64, Vec<Vec<u8>>)> = self
            .round_trip(&session, pipe.query_async(&mut conn))
            .await?;
        Ok(pages
            .into_iter()
            .map(|(cursor, flat)| (cursor, parse_members(flat)))
            .collect())
    }

    /// Calls `visit` with every page of members of every index in `indexes`: first pages
    /// pipelined, the rest of a large index one `HSCAN` at a time.
    async fn index_pages<'a>(
        &self,
        indexes: &'a [String],
        mut visit: impl FnMut(&'a str, Vec<(String, u64)>),
    ) -> Result<()> {
        if indexes.is_empty() {
            return Ok(());
        }
        let pages = self
            .scan_pages(indexes.iter().map(|index| (index.as_str(), 0)))
            .await?;
        for (index, (mut cursor, members)) in indexes.iter().zip(pages) {
            visit(index, members);
            while cursor != 0 {
                let (next, members) = self.scan_index(index, cursor).await?;
                visit(index, members);
                cursor = next;
            }
        }
        Ok(())
    }

    /// Which of `members` (cache key, generation) still name a live entry.
    async fn live(&self, members: &[(String, u64)]) -> Result<Vec<bool>> {
        let mut pipe = Pipeline::with_capacity(members.len());
        for (key, _) in members {
            pipe.cmd("GETRANGE")
                .arg(self.keys.data(key))
                .arg(0)
                .arg(super::entry::GENERATION_WIDTH - 1);
        }
        let (session, mut conn) = self.connect().await?;
        let generations: Vec<String> = self
            .round_trip(&session, pipe.query_async(&mut conn))
            .await?;
        Ok(members
            .iter()
            .zip(generations)
            .map(|((_, member), entry)| entry.parse::<u64>().ok() == Some(*member))
            .collect())
    }

    /// The keys of the live entries that depend on `dep`.
    pub async fn dependents(&self, dep: &Dep) -> Result<Vec<String>> {
        let index = self.keys.index(dep);
        let mut keys = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, members) = self.scan_index(&index, cursor).await?;
            if !members.is_empty() {
                let live = self.live(&members).await?;
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
        keys.sort();
        keys.dedup(); // HSCAN may return a member twice
        Ok(keys)
    }

    /// Counts what the prefix holds, calling `progress` after each batch of keys.
    pub async fn prefix_stats(
        &self,
        mut progress: impl FnMut(&PrefixStats) + Send,
    ) -> Result<PrefixStats> {
        let mut stats = PrefixStats::default();
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_keys("*", cursor).await?;
            if !keys.is_empty() {
                let mut pipe = Pipeline::with_capacity(keys.len());
                for key in &keys {
                    pipe.cmd("MEMORY").arg("USAGE").arg(key);
                }
                let (session, mut conn) = self.connect().await?;
                let sizes: Vec<Option<u64>> = self
                    .round_trip(&session, pipe.query_async(&mut conn))
                    .await?;
                stats.memory_bytes += sizes.into_iter().flatten().sum::<u64>();
            }
            let mut indexes = Vec::new();
            for key in keys {
                stats.keys_visited += 1;
                match self.keys.kind_of(&key) {
                    Some("d") => stats.entries += 1,
                    Some("r") => indexes.push(key),
                    _ => {}
                }
            }
            stats.index_keys += indexes.len() as u64;
            let mut members = Vec::new();
            self.index_pages(&indexes, |_, page| members.extend(page))
                .await?;
            stats.index_members += members.len() as u64;
            for chunk in members.chunks(self.batch_size) {
                let live = self.live(chunk).await?;
                stats.garbage += live.iter().filter(|l| !**l).count() as u64;
            }
            progress(&stats);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(stats)
    }

    /// Like [`MatroskaCache::prune`](crate::MatroskaCache::prune), calling `progress` after
    /// each batch.
    pub async fn prune_with_progress(
        &self,
        mut progress: impl FnMut(&PruneReport) + Send,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let mut cursor = 0u64;
        loop {
            let (next, index_keys) = self.scan_keys("r", cursor).await?;
            report.indexes += index_keys.len() as u64;
            // Every index goes to the script, even with no member: it also retires indexes
            // left with nothing but old invalidation marks. Batches hold at most `batch_size`
            // members, and at most `batch_size` indexes.
            let mut pages: Vec<(&str, Vec<(String, u64)>)> = Vec::new();
            self.index_pages(&index_keys, |index, members| pages.push((index, members)))
                .await?;
            let mut batch: Vec<(&str, Vec<(String, u64)>)> = Vec::new();
            let mut batch_members = 0;
            for (index, members) in pages {
                report.members += members.len() as u64;
                if !batch.is_empty()
                    && (batch_members + members.len() > self.batch_size
                        || batch.len() >= self.batch_size)
                {
                    report.removed += self.prune_batch(&batch).await?;
                    progress(&report);
                    batch.clear();
                    batch_members = 0;
                }
                batch_members += members.len();
                batch.push((index, members));
            }
            if !batch.is_empty() {
                report.removed += self.prune_batch(&batch).await?;
                progress(&report);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(report)
    }
}

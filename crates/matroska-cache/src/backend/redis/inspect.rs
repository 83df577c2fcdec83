//! Looking into a live cache from outside: what depends on a dependency, what a prefix holds,
//! and pruning with progress. Everything walks the keyspace in bounded batches (`SCAN`,
//! `HSCAN`, pipelines of at most `batch_size` commands), so Redis stays responsive however
//! large the cache is.

use redis::Pipeline;

use super::RedisBackend;
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
        let mut conn = self.conn.clone();
        self.round_trip(
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

    /// Which of `members` (cache key, generation) still name a live entry.
    async fn live(&self, members: &[(String, u64)]) -> Result<Vec<bool>> {
        let mut pipe = Pipeline::with_capacity(members.len());
        for (key, _) in members {
            pipe.cmd("HGET").arg(self.keys.data(key)).arg("g");
        }
        let mut conn = self.conn.clone();
        let generations: Vec<Option<u64>> = self.round_trip(pipe.query_async(&mut conn)).await?;
        Ok(members
            .iter()
            .zip(generations)
            .map(|((_, member), entry)| entry == Some(*member))
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
                let mut conn = self.conn.clone();
                let sizes: Vec<Option<u64>> = self.round_trip(pipe.query_async(&mut conn)).await?;
                stats.memory_bytes += sizes.into_iter().flatten().sum::<u64>();
            }
            for key in &keys {
                stats.keys_visited += 1;
                match self.keys.kind_of(key) {
                    Some("d") => stats.entries += 1,
                    Some("r") => {
                        stats.index_keys += 1;
                        let mut member_cursor = 0;
                        loop {
                            let (next, members) = self.scan_index(key, member_cursor).await?;
                            stats.index_members += members.len() as u64;
                            if !members.is_empty() {
                                let live = self.live(&members).await?;
                                stats.garbage += live.iter().filter(|l| !**l).count() as u64;
                            }
                            member_cursor = next;
                            if member_cursor == 0 {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
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
            for index in index_keys {
                report.indexes += 1;
                let mut index_cursor = 0;
                loop {
                    let (next_member, members) = self.scan_index(&index, index_cursor).await?;
                    report.members += members.len() as u64;
                    let batch: Vec<(String, String)> = members
                        .into_iter()
                        .map(|(k, g)| (k, g.to_string()))
                        .collect();
                    // Once per page even if it holds no member: the script also retires
                    // indexes left with nothing but old invalidation marks.
                    report.removed += self.prune_batch(&index, &batch).await?;
                    progress(&report);
                    index_cursor = next_member;
                    if index_cursor == 0 {
                        break;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(report)
    }
}

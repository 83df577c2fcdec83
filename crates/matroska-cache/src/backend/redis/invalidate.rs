//! Invalidation on Redis: bounded steps, so that Redis never stalls, however many
//! dependencies or dependents one call names.
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
//! A chunk's mark is taken before its snapshot, so a member written after it (a put that
//! began after this invalidation) is never dropped by it, and a fenced put whose ticket
//! predates the mark is refused. If a call fails half-way, the dependents not yet dropped
//! are still in their indexes and calling it again drops them.

use std::collections::VecDeque;
use std::time::Duration;

use super::keys::fence_bucket;
use super::scripts::{DROP, INVALIDATE};
use super::{entry, parse_members, RedisBackend};
use crate::dep::Dep;
use crate::error::Result;
use crate::ttl;

/// Dependencies marked and measured by one `invalidate.lua`: small enough that the script
/// runs for well under a millisecond.
pub(crate) const DEPS_PER_CHUNK: usize = 256;

/// `HSCAN`s sent in one pipeline while walking large indexes.
const SCANS_PER_ROUND_TRIP: usize = 16;

/// A member to drop: the position of its index in the chunk, its cache key, and its
/// generation as the entry starts with it (20 digits).
type Member = (usize, String, String);

impl RedisBackend {
    /// Drops every entry that depends on one of `deps`; returns how many.
    ///
    /// Chunks run one after the other: running several at once saved little (Redis's own
    /// work dominates) and let a concurrent command wait behind several scripts.
    pub(super) async fn invalidate_all(&self, deps: &[Dep]) -> Result<u64> {
        let mut dropped = 0;
        for chunk in deps.chunks(DEPS_PER_CHUNK) {
            dropped += self.invalidate_chunk(chunk).await?;
        }
        Ok(dropped)
    }

    /// How long an invalidation counts as running after its last sign of life: fenced puts
    /// of its dependencies are refused meanwhile. Each batch is a sign of life, and no two
    /// batches are more than two round trips (each bounded by the timeout) apart, so five
    /// timeouts leave a wide margin; a crashed invalidation stops blocking after that long.
    fn running_deadline(&self) -> u64 {
        ttl::redis_millis(self.timeout.saturating_mul(5).max(Duration::from_secs(1)))
    }

    async fn invalidate_chunk(&self, deps: &[Dep]) -> Result<u64> {
        let chunk = Chunk {
            indexes: deps.iter().map(|d| self.keys.index(d)).collect(),
            buckets: deps.iter().map(fence_bucket).collect(),
        };
        let mut invocation = INVALIDATE.prepare_invoke();
        invocation.key(self.keys.sequence()).key(self.keys.fences());
        for index in &chunk.indexes {
            invocation.key(index);
        }
        invocation
            .arg(self.batch_size)
            .arg(self.running_deadline())
            .arg(&chunk.buckets);
        let (session, mut conn) = self.connect().await?;
        let (mark, sizes, lists, running): Started = self
            .round_trip(&session, invocation.invoke_async(&mut conn))
            .await?;
        if running == 0 {
            return Ok(0); // no dependents: finished in that one round trip
        }
        match lists {
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
                self.drop_batch(&chunk, &batch, true).await
            }
            None => self.drop_scanned(&chunk, &sizes, mark).await,
        }
    }

    /// Walks the indexes (those with members) in pipelined `HSCAN` rounds and drops what
    /// they held before `mark`, one batch at a time; the last batch ends the invalidation.
    /// Scanning a hash while members leave it still returns every member that stays.
    async fn drop_scanned(&self, chunk: &Chunk, sizes: &[u64], mark: u64) -> Result<u64> {
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
            let pages = self.scan_pages(scans).await?;
            for ((position, _), (next, members)) in round.into_iter().zip(pages) {
                for (key, generation) in members {
                    if generation < mark {
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
    /// touches; with `finish`, ends the chunk's invalidation in the same step.
    async fn drop_batch(&self, chunk: &Chunk, batch: &[Member], finish: bool) -> Result<u64> {
        // Positions in the chunk -> positions among the touched indexes (1-based in Lua).
        let mut touched: Vec<usize> = batch.iter().map(|(position, _, _)| *position).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut invocation = DROP.prepare_invoke();
        invocation.key(self.keys.sequence()).key(self.keys.fences());
        for &position in &touched {
            invocation.key(&chunk.indexes[position]);
        }
        invocation
            .arg(touched.len())
            .arg(u8::from(finish))
            .arg(self.running_deadline())
            .arg(chunk.buckets.len())
            .arg(&chunk.buckets);
        for (position, key, generation) in batch {
            let local = touched
                .binary_search(position)
                .expect("touched holds every position");
            invocation.key(self.keys.data(key));
            invocation.arg(local + 1).arg(key).arg(generation);
        }
        let (session, mut conn) = self.connect().await?;
        self.round_trip(&session, invocation.invoke_async(&mut conn))
            .await
    }
}

/// What `invalidate.lua` returns: the mark, each index's size, the members of every index
/// (flat `HGETALL` replies) when they are few, and whether the invalidation still runs.
type Started = (u64, Vec<u64>, Option<Vec<Vec<Vec<u8>>>>, u8);

/// The dependencies one `invalidate.lua` handles: their index keys and fence buckets.
struct Chunk {
    indexes: Vec<String>,
    buckets: Vec<u64>,
}

//! The directories of a sharded cache (see `docs/cluster.md`): rebuilding those that may
//! have lost bits, and pruning those of dependencies nobody depends on any more.
//!
//! **Repair.**
//! A shard that starts a new epoch (its master restarted, failed over to a replica that
//! missed the last writes, or was flushed) marks its directories incomplete: invalidations of
//! the dependencies homed there visit every shard meanwhile. A repair pass walks every
//! shard's index keys and sets, at each incomplete home, the bit of every shard that holds a
//! slice of one of its dependencies; puts during the pass set their own bits. It first renews
//! every shard's directory version, so that puts which skip registering (they remember
//! having registered: `registrations.rs`) either ran before and are found by the pass, or
//! are refused and register again.
//!
//! One pass at a time, for the whole prefix, whichever process runs it: it holds the
//! prefix's repair lock (`{prefix}:k`, renewed at every page) and records, in
//! `{prefix}:q`, the marks it repairs and each master's `SCAN` cursor after each page. The
//! masters are walked at once. Every process learns that a repair is due (its handshake
//! began the epoch, or an invalidation met the mark) and tries the lock every second while
//! the marks remain; if the pass's process dies, another takes the lock when it expires and
//! resumes from the recorded cursors, without renewing the directory versions again (they
//! were renewed after these marks were set). Other marks (a newer epoch) start over.
//! Concurrent passes would only repeat work: every step is idempotent.
//!
//! **Pruning** (with `prune()` and the background prune, after the index members): a directory
//! whose every named shard holds no slice of its dependency any more is deleted in four
//! steps, because a registration of a bit already set is invisible: (1) `bury.lua` moves it to
//! a tombstone, which invalidations still read, so registrations from now on create a new
//! directory; (2) the directory version of every shard the tombstone names is renewed, so a
//! put that registered (or skipped registering) before (1) and has not stored yet is refused
//! and registers again; (3) those shards are checked for a slice once more (a put that stored
//! before (2) is found); (4) `settle.lua` deletes the tombstone, or merges it back. When the pass
//! is over, the mark is removed, unless a newer epoch set it again.
//!
//! Several passes may prune at once (`prune()`, the CLI, background prunes of processes whose
//! locks expired). Each pass has a token, and burying writes it as the tombstone's owner: a
//! pass deletes a tombstone only if it still owns it. Another pass that buried into it
//! meanwhile may have merged in a bit the first pass never checked, and settles it itself
//! after checking every bit (a merge back is always safe).

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use tracing::{debug, info, warn};

use super::invalidate::shards_in;
use super::router::Invocation;
use super::scripts::{
    BURY, DIRECTORY_BITS, DIRECTORY_VERSION, REPAIRED, REPAIR_END, REPAIR_PROGRESS, SETTLE,
};
use super::RedisBackend;
use crate::dep::Dep;
use crate::error::{Error, Result};
use crate::ttl;

/// What a call to repair the directories did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repair {
    /// No directory is incomplete any more; this many shards were repaired by this call.
    Done(usize),
    /// Another process's pass holds the repair lock.
    Elsewhere,
}

impl RedisBackend {
    /// Starts the task that repairs directories: once now (shards that began their first
    /// epoch, or a new one while no process ran), then whenever this process learns that a
    /// shard's directories are incomplete (its handshake began a new epoch, or an
    /// invalidation found the mark), and every second while another process's pass holds the
    /// lock (it takes over if that process dies). It ends with the last clone of the backend.
    pub(super) fn spawn_repairer(&self) {
        let alive = Arc::downgrade(&self.alive);
        let repairer = RedisBackend {
            alive: Arc::new(()),
            ..self.clone()
        };
        // The first repair needs no wake-up.
        repairer.router.repair_wanted.notify_one();
        tokio::spawn(async move {
            let mut pending = false;
            loop {
                // Wakes every second to notice that the backend is gone.
                let woken = tokio::time::timeout(
                    Duration::from_secs(1),
                    repairer.router.repair_wanted.notified(),
                )
                .await;
                if alive.upgrade().is_none() {
                    break;
                }
                if woken.is_err() && !pending {
                    continue;
                }
                pending = match repairer.repair_directories().await {
                    Ok(Repair::Done(_)) => false,
                    Ok(Repair::Elsewhere) => true,
                    Err(error) => {
                        warn!(%error, "directory repair failed; resuming in a second");
                        true
                    }
                };
            }
        });
    }

    /// Repairs the directories of every shard marked incomplete, unless another pass holds
    /// the prefix's repair lock (see the module documentation).
    pub(crate) async fn repair_directories(&self) -> Result<Repair> {
        let layout = self.router.layout();
        if layout.len() == 1 {
            return Ok(Repair::Done(0));
        }
        self.check_shard_count().await?;
        let incomplete = self.incomplete_marks().await?;
        if incomplete.is_empty() {
            return Ok(Repair::Done(0));
        }
        let token = rand::random::<u64>().to_string();
        if !self.repair_step(&token, &[]).await? {
            debug!("another process repairs the directories");
            return Ok(Repair::Elsewhere);
        }
        // The progress belongs to these marks: a newer epoch anywhere starts over.
        let signature = incomplete
            .iter()
            .map(|(home, mark)| format!("{home}={mark}"))
            .collect::<Vec<_>>()
            .join(",");
        let progress_key = layout.repair_progress_key();
        let progress: BTreeMap<String, String> = self
            .router
            .send_unsharded(
                &progress_key,
                redis::cmd("HGETALL").arg(&progress_key).clone().into(),
                self.timeout,
            )
            .await?;
        let resumed = progress.get("marks") == Some(&signature);
        if !resumed {
            // Puts that skipped their registrations under the old versions are refused from
            // now on; those that ran before are in the index slices read below
            // (registrations.rs). Once per set of marks: a resumed pass does not renew them.
            self.renew_directory_versions(0..layout.len()).await?;
            let fresh = [("marks".to_owned(), signature)];
            self.router
                .send_unsharded::<u64>(
                    &progress_key,
                    redis::cmd("DEL").arg(&progress_key).clone().into(),
                    self.timeout,
                )
                .await?;
            if !self.repair_step(&token, &fresh).await? {
                return Ok(Repair::Elsewhere);
            }
        }
        let cursors = if resumed { progress } else { BTreeMap::new() };
        let walks = self
            .router
            .masters()
            .await?
            .into_iter()
            .map(|(node, shards)| {
                let field = format!("c:{}", node.name());
                let start = cursors.get(&field).cloned();
                self.repair_on(shards, &incomplete, &token, field, start)
            });
        let bits: u64 = try_join_all(walks).await?.into_iter().sum();
        let _: Vec<(u8, u64)> = self
            .send_all(
                incomplete
                    .iter()
                    .map(|(&home, mark)| {
                        let mut invocation = Invocation::new(&REPAIRED);
                        invocation.key(layout.shard(home).incomplete()).arg(mark);
                        (home, invocation.into())
                    })
                    .collect(),
            )
            .await?;
        let mut end = Invocation::new(&REPAIR_END);
        end.key(layout.repair_lock_key())
            .key(&progress_key)
            .arg(&token);
        let _: u64 = self
            .router
            .send_unsharded(&progress_key, end.into(), self.timeout)
            .await?;
        info!(
            shards = incomplete.len(),
            bits, resumed, "repaired the directories of shards that started a new epoch"
        );
        Ok(Repair::Done(incomplete.len()))
    }

    /// The "directories incomplete" mark of each shard that has one (none for a cache of
    /// one shard).
    pub(super) async fn incomplete_marks(&self) -> Result<BTreeMap<usize, String>> {
        let layout = self.router.layout();
        if layout.len() == 1 {
            return Ok(BTreeMap::new());
        }
        let marks: Vec<(Option<String>, u64)> = self
            .send_all(
                (0..layout.len())
                    .map(|home| {
                        let cmd = redis::cmd("GET")
                            .arg(layout.shard(home).incomplete())
                            .clone();
                        (home, cmd.into())
                    })
                    .collect(),
            )
            .await?;
        Ok(marks
            .into_iter()
            .enumerate()
            .filter_map(|(home, (mark, _))| Some((home, mark?)))
            .collect())
    }

    /// Walks the index keys of one master's `shards` from `start` (a saved cursor, `done`,
    /// or none), setting at each incomplete home the bit of every shard that holds a slice
    /// of one of its dependencies; records the cursor after each page. Returns the bits set.
    async fn repair_on(
        &self,
        shards: Vec<usize>,
        incomplete: &BTreeMap<usize, String>,
        token: &str,
        field: String,
        start: Option<String>,
    ) -> Result<u64> {
        let layout = self.router.layout();
        let mut cursor = match start.as_deref() {
            Some("done") => return Ok(0),
            Some(saved) => saved.parse().unwrap_or(0),
            None => 0,
        };
        let via = shards[0];
        let mut bits = 0;
        loop {
            let (next, keys) = self.scan_index_keys(via, &shards, cursor).await?;
            let mut by_home: BTreeMap<usize, Invocation> = BTreeMap::new();
            for (shard, key) in keys {
                let Some(dep) = layout.shard(shard).dep_of_index(&key) else {
                    continue;
                };
                let home = layout.home_of(&dep);
                if incomplete.contains_key(&home) {
                    by_home
                        .entry(home)
                        .or_insert_with(|| Invocation::new(&DIRECTORY_BITS))
                        .key(layout.shard(home).directory(&dep))
                        .arg(shard);
                    bits += 1;
                }
            }
            let _: Vec<(u8, u64)> = self
                .send_all(
                    by_home
                        .into_iter()
                        .map(|(home, bits)| (home, bits.into()))
                        .collect(),
                )
                .await?;
            cursor = next;
            let saved = if cursor == 0 {
                "done".to_owned()
            } else {
                cursor.to_string()
            };
            if !self.repair_step(token, &[(field.clone(), saved)]).await? {
                return Err(Error::Redis(crate::error::ServerError::cluster(
                    "TRYAGAIN",
                    "another process took over the directory repair",
                )));
            }
            if cursor == 0 {
                return Ok(bits);
            }
        }
    }

    /// Takes or keeps the repair lock for `token`, recording `progress`; whether it holds
    /// the lock.
    async fn repair_step(&self, token: &str, progress: &[(String, String)]) -> Result<bool> {
        let layout = self.router.layout();
        let mut invocation = Invocation::new(&REPAIR_PROGRESS);
        invocation
            .key(layout.repair_lock_key())
            .key(layout.repair_progress_key())
            .arg(token)
            .arg(self.repair_lease());
        for (field, value) in progress {
            invocation.arg(field).arg(value);
        }
        let held: u8 = self
            .router
            .send_unsharded(&layout.repair_lock_key(), invocation.into(), self.timeout)
            .await?;
        Ok(held == 1)
    }

    /// How long the repair lock lasts without a step of its pass (ms): each page takes
    /// three round trips, each within the timeout.
    fn repair_lease(&self) -> u64 {
        ttl::redis_millis(self.timeout.saturating_mul(5).max(Duration::from_secs(2)))
    }

    /// Renews the directory version of `shards` (and learns the new ones).
    async fn renew_directory_versions(&self, shards: impl Iterator<Item = usize>) -> Result<()> {
        let layout = self.router.layout();
        let shards: Vec<usize> = shards.collect();
        let versions: Vec<(String, u64)> = self
            .send_all(
                shards
                    .iter()
                    .map(|&shard| {
                        let mut invocation = Invocation::new(&DIRECTORY_VERSION);
                        invocation.key(layout.shard(shard).directory_version());
                        (shard, invocation.into())
                    })
                    .collect(),
            )
            .await?;
        for (&shard, (version, _)) in shards.iter().zip(&versions) {
            self.router.registrations.learn(shard, version);
        }
        Ok(())
    }

    /// Deletes the directories homed in `homes` whose dependency no shard holds a slice of
    /// any more (see the module documentation); returns how many.
    pub(super) async fn prune_directories(&self, homes: &[usize]) -> Result<u64> {
        let layout = self.router.layout();
        if layout.len() == 1 {
            return Ok(0);
        }
        self.check_shard_count().await?;
        let mut deleted = 0;
        for (_, served) in self.router.masters().await? {
            let mine: Vec<usize> = served.into_iter().filter(|s| homes.contains(s)).collect();
            let Some(&via) = mine.first() else {
                continue;
            };
            // Tombstones too: a pass that stopped half-way leaves them.
            for kind in ["h", "t"] {
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.scan_keys(via, &mine, kind, cursor).await?;
                    let mut deps: Vec<(usize, Dep)> = keys
                        .iter()
                        .filter_map(|(home, key)| {
                            Some((*home, layout.shard(*home).dep_of_directory(key)?))
                        })
                        .collect();
                    deps.sort_unstable_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
                    deps.dedup();
                    deleted += self.prune_directory_batch(&deps).await?;
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
            }
        }
        if deleted > 0 {
            info!(
                deleted,
                "pruned directories of dependencies without dependents"
            );
        }
        Ok(deleted)
    }

    /// The four steps for one page of `(home, dependency)` directories.
    async fn prune_directory_batch(&self, deps: &[(usize, Dep)]) -> Result<u64> {
        if deps.is_empty() {
            return Ok(0);
        }
        let layout = self.router.layout();
        // Which shards each directory and tombstone names; only those with no slice in any
        // of them are candidates.
        let replies = self
            .per_home(deps, |pipe, keys, dep| {
                pipe.cmd("GET").arg(keys.directory(dep));
                pipe.cmd("GET").arg(keys.directory_tomb(dep));
            })
            .await?;
        let named: Vec<BTreeSet<usize>> = replies
            .iter()
            .map(|replies| {
                replies
                    .iter()
                    .flat_map(|bits| named_by(bits, layout.len()))
                    .collect()
            })
            .collect();
        let held = self.slices_held(deps, &named).await?;
        // A tombstone of a dependency with dependents (left by a stopped pass) goes back.
        let revived: Vec<(usize, Dep)> = deps
            .iter()
            .zip(&replies)
            .zip(&held)
            .filter(|((_, replies), held)| **held && !matches!(replies[1], redis::Value::Nil))
            .map(|((dep, _), _)| dep.clone())
            .collect();
        // This pass's token: another pass that buries into the same tombstone takes it over.
        let token = rand::random::<u64>();
        if !revived.is_empty() {
            self.settle(&revived, &vec![true; revived.len()], token)
                .await?;
        }
        let candidates: Vec<(usize, Dep)> = deps
            .iter()
            .zip(&held)
            .filter(|(_, held)| !**held)
            .map(|(dep, _)| dep.clone())
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        // 1. Bury.
        let tombs = self.bury(&candidates, token).await?;
        let named: Vec<BTreeSet<usize>> = tombs
            .iter()
            .map(|bits| named_by(bits, layout.len()).collect())
            .collect();
        // 2. Renew the versions of the shards they name.
        let shards: BTreeSet<usize> = named.iter().flatten().copied().collect();
        self.renew_directory_versions(shards.into_iter()).await?;
        // 3. Check again; 4. settle.
        let held = self.slices_held(&candidates, &named).await?;
        self.settle(&candidates, &held, token).await
    }

    /// One pipeline per home shard of `deps`, with the commands `each` adds for each of its
    /// dependencies; the replies of each dependency, in the order of `deps`.
    async fn per_home(
        &self,
        deps: &[(usize, Dep)],
        each: impl Fn(&mut redis::Pipeline, &super::KeySpace, &Dep),
    ) -> Result<Vec<Vec<redis::Value>>> {
        let layout = self.router.layout();
        let by_home = by_home(deps);
        let requests = by_home
            .iter()
            .map(|(&home, members)| {
                let mut pipe = redis::Pipeline::new();
                for &i in members {
                    each(&mut pipe, layout.shard(home), &deps[i].1);
                }
                (home, pipe.into())
            })
            .collect();
        let replies: Vec<(Vec<redis::Value>, u64)> = self.send_all(requests).await?;
        let mut out = vec![Vec::new(); deps.len()];
        for ((_, members), (values, _)) in by_home.iter().zip(replies) {
            let per = values.len() / members.len().max(1);
            for (&i, chunk) in members.iter().zip(values.chunks(per.max(1))) {
                out[i] = chunk.to_vec();
            }
        }
        Ok(out)
    }

    /// Whether any of the shards `named[i]` holds an index slice of `deps[i]`.
    async fn slices_held(
        &self,
        deps: &[(usize, Dep)],
        named: &[BTreeSet<usize>],
    ) -> Result<Vec<bool>> {
        let layout = self.router.layout();
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, shards) in named.iter().enumerate() {
            for &shard in shards {
                by_shard.entry(shard).or_default().push(i);
            }
        }
        let requests = by_shard
            .iter()
            .map(|(&shard, members)| {
                let mut pipe = redis::Pipeline::with_capacity(members.len());
                for &i in members {
                    pipe.cmd("EXISTS")
                        .arg(layout.shard(shard).index(&deps[i].1));
                }
                (shard, pipe.into())
            })
            .collect();
        let replies: Vec<(Vec<u8>, u64)> = self.send_all(requests).await?;
        let mut held = vec![false; deps.len()];
        for ((_, members), (exists, _)) in by_shard.iter().zip(replies) {
            for (&i, exists) in members.iter().zip(exists) {
                held[i] |= exists == 1;
            }
        }
        Ok(held)
    }

    /// Step 1: `bury.lua` at each home of `deps`, taking each tombstone for the pass
    /// `token`; each tombstone's bitmap, in the order of `deps`.
    async fn bury(&self, deps: &[(usize, Dep)], token: u64) -> Result<Vec<redis::Value>> {
        let (by_home, replies) = self.at_homes(&BURY, deps, token, |_| None).await?;
        let mut tombs = vec![redis::Value::Nil; deps.len()];
        for ((_, members), reply) in by_home.iter().zip(replies) {
            if let redis::Value::Array(replies) = reply {
                for (&i, tomb) in members.iter().zip(replies) {
                    tombs[i] = tomb;
                }
            }
        }
        Ok(tombs)
    }

    /// Step 4: `settle.lua` at each home of `deps`: deletes the tombstones whose dependency
    /// no shard holds (`held[i]` false) and that the pass `token` still holds, merges the
    /// others back; returns how many it deleted.
    async fn settle(&self, deps: &[(usize, Dep)], held: &[bool], token: u64) -> Result<u64> {
        let (_, replies) = self
            .at_homes(&SETTLE, deps, token, |i| {
                Some(if held[i] { "0" } else { "1" })
            })
            .await?;
        Ok(replies
            .iter()
            .map(|reply| match reply {
                redis::Value::Int(n) => *n as u64,
                _ => 0,
            })
            .sum())
    }

    /// `script` once per home of `deps`, with each dependency's directory, tombstone and
    /// tombstone owner as keys, the pass's `token` as the first argument and `arg(i)` (if
    /// any) after it; the positions of each home's dependencies, and its reply.
    async fn at_homes(
        &self,
        script: &'static redis::Script,
        deps: &[(usize, Dep)],
        token: u64,
        arg: impl Fn(usize) -> Option<&'static str>,
    ) -> Result<(BTreeMap<usize, Vec<usize>>, Vec<redis::Value>)> {
        let layout = self.router.layout();
        let by_home = by_home(deps);
        let requests = by_home
            .iter()
            .map(|(&home, members)| {
                let keys = layout.shard(home);
                let mut invocation = Invocation::new(script);
                invocation.arg(token);
                for &i in members {
                    invocation
                        .key(keys.directory(&deps[i].1))
                        .key(keys.directory_tomb(&deps[i].1))
                        .key(keys.directory_tomb_owner(&deps[i].1));
                    if let Some(arg) = arg(i) {
                        invocation.arg(arg);
                    }
                }
                (home, invocation.into())
            })
            .collect();
        let replies: Vec<(redis::Value, u64)> = self.send_all(requests).await?;
        Ok((by_home, replies.into_iter().map(|(v, _)| v).collect()))
    }
}

/// The positions in `deps` of each home's dependencies.
fn by_home(deps: &[(usize, Dep)]) -> BTreeMap<usize, Vec<usize>> {
    let mut by_home: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (home, _)) in deps.iter().enumerate() {
        by_home.entry(*home).or_default().push(i);
    }
    by_home
}

/// The shards a directory or tombstone (as `GET` returned it: a bitmap, or nil) names.
fn named_by(bits: &redis::Value, shards: usize) -> impl Iterator<Item = usize> + '_ {
    let bits: &[u8] = match bits {
        redis::Value::BulkString(bits) => bits,
        _ => &[],
    };
    shards_in(bits, shards)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use matroska_test_support::RedisServer;

    use super::*;
    use crate::{dep, MatroskaCache};

    /// The coordinated repair (issue 19, item 8), step by step on one server with 16
    /// shards: directories lost with their marks set (as a new epoch leaves them). While
    /// another process holds the repair lock, a pass leaves the work to it; when that
    /// process died half-way (its lock expired, its progress recorded), the next pass
    /// resumes without renewing the directory versions again and rebuilds every bit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repair_waits_for_the_lock_then_resumes_where_it_stopped() {
        let server = tokio::task::block_in_place(RedisServer::start);
        let backend = RedisBackend::builder(&server.url(), "repairs")
            .shards(16)
            .timeout(Duration::from_millis(200)) // the lock's lease: 2 s
            .auto_prune(None)
            .build()
            .await
            .unwrap();
        let layout = backend.router.layout();
        let cache = MatroskaCache::new(backend.clone());
        let deps: Vec<Dep> = (0..20).map(|t| dep::tag(&format!("t{t}"))).collect();
        for i in 0..400 {
            let key = format!("k{i}");
            cache
                .put(&key, &i, [deps[i % 20].clone()], Duration::from_secs(600))
                .await
                .unwrap();
        }
        while backend.repair_pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every home loses its directories and is marked incomplete.
        let mut conn = server.connection();
        let mut signature = Vec::new();
        for home in 0..16 {
            let keys = layout.shard(home);
            redis::cmd("SET")
                .arg(keys.incomplete())
                .arg("lost")
                .exec(&mut conn)
                .unwrap();
            signature.push(format!("{home}=lost"));
            for dep in &deps {
                redis::cmd("DEL")
                    .arg(keys.directory(dep))
                    .exec(&mut conn)
                    .unwrap();
            }
        }
        // Another process repairs: this one leaves it the work.
        redis::cmd("SET")
            .arg(layout.repair_lock_key())
            .arg("other")
            .arg("PX")
            .arg(1_000)
            .exec(&mut conn)
            .unwrap();
        assert_eq!(
            backend.repair_directories().await.unwrap(),
            Repair::Elsewhere
        );
        assert_eq!(backend.repair_pending().await.unwrap(), 16);
        // It renewed the versions for these marks and died before its first page.
        redis::cmd("HSET")
            .arg(layout.repair_progress_key())
            .arg("marks")
            .arg(signature.join(","))
            .exec(&mut conn)
            .unwrap();
        let versions = |conn: &mut redis::Connection| -> Vec<Option<String>> {
            (0..16)
                .map(|s| {
                    redis::cmd("GET")
                        .arg(layout.shard(s).directory_version())
                        .query(conn)
                        .unwrap()
                })
                .collect()
        };
        let before = versions(&mut conn);
        tokio::time::sleep(Duration::from_millis(1_100)).await; // its lock expires
        assert_eq!(
            backend.repair_directories().await.unwrap(),
            Repair::Done(16)
        );
        assert_eq!(
            versions(&mut conn),
            before,
            "a resumed pass renewed the versions"
        );
        assert_eq!(backend.repair_pending().await.unwrap(), 0);
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("{repairs}:[kq]")
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "the lock and the progress outlived the pass"
        );
        // The directories are whole again: each invalidation finds its 20 dependents.
        for dep in &deps {
            assert_eq!(
                cache.invalidate([dep.clone()]).await.unwrap(),
                20,
                "{dep:?}"
            );
        }
    }

    /// Issue 19, item 8: every process learns that a repair is due, not only the one whose
    /// handshake began the epoch (which may be gone). Here the marks appear with no
    /// handshake in this process: its repairer sleeps until one of its invalidations meets
    /// an incomplete home, and then repairs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalidation_that_meets_an_incomplete_home_starts_the_repair() {
        let server = tokio::task::block_in_place(RedisServer::start);
        let backend = RedisBackend::builder(&server.url(), "told")
            .shards(16)
            .auto_prune(None)
            .build()
            .await
            .unwrap();
        let layout = backend.router.layout();
        let cache = MatroskaCache::new(backend.clone());
        let d = dep::tag("d");
        cache
            .put("k", &1, [d.clone()], Duration::from_secs(600))
            .await
            .unwrap();
        while backend.repair_pending().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut conn = server.connection();
        for home in 0..16 {
            redis::cmd("SET")
                .arg(layout.shard(home).incomplete())
                .arg("lost")
                .exec(&mut conn)
                .unwrap();
        }
        // The repairer wakes every second, but nothing told it.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(backend.repair_pending().await.unwrap(), 16);
        // It is the invalidation that meets the mark (it visits every shard meanwhile).
        assert_eq!(cache.invalidate([d]).await.unwrap(), 1);
        for _ in 0..200 {
            if backend.repair_pending().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no repair within 10 s of the invalidation that met the marks");
    }

    /// Two pruning passes over one directory (issue 19, item 4), step by step: pass A buries
    /// a directory whose one shard holds nothing; a put registers another shard (a new
    /// directory); pass B buries that into A's tombstone; A finds its shard empty and
    /// settles. A must leave the tombstone to B, which holds a bit A never checked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_never_deletes_a_bit_another_pass_buried() {
        let server = tokio::task::block_in_place(RedisServer::start);
        let backend = RedisBackend::builder(&server.url(), "prunes")
            .shards(16)
            .auto_prune(None)
            .build()
            .await
            .unwrap();
        let layout = backend.router.layout();
        let d = dep::tag("shared");
        let home = layout.home_of(&d);
        let empty = (home + 1) % 16;
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| ![home, empty].contains(&layout.shard_of(k)))
            .unwrap();
        // dir(D) names a shard that holds no slice of D.
        let mut conn = server.connection();
        redis::cmd("SETBIT")
            .arg(layout.shard(home).directory(&d))
            .arg(empty)
            .arg(1)
            .exec(&mut conn)
            .unwrap();
        let deps = [(home, d.clone())];
        let (a, b) = (1, 2);
        backend.bury(&deps, a).await.unwrap();
        // A process that never registered D puts a dependent in a third shard.
        let writer = RedisBackend::builder(&server.url(), "prunes")
            .auto_prune(None)
            .shards(16)
            .build()
            .await
            .unwrap();
        let cache = MatroskaCache::new(writer);
        cache
            .put(&key, &1, [d.clone()], Duration::from_secs(600))
            .await
            .unwrap();
        backend.bury(&deps, b).await.unwrap();
        // A renewed and checked its one shard: empty. It settles: nothing is deleted.
        assert_eq!(backend.settle(&deps, &[false], a).await.unwrap(), 0);
        assert_eq!(cache.invalidate([d.clone()]).await.unwrap(), 1);
        assert_eq!(cache.get::<i32>(&key).await.unwrap(), None);
        // B, which checked every bit it buried, deletes what is left once nothing holds D.
        assert_eq!(backend.settle(&deps, &[false], b).await.unwrap(), 1);
    }
}

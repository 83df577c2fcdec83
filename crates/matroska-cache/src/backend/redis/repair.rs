//! Rebuilding directories that may have lost bits (sharded caches; see `docs/cluster.md`).
//!
//! A shard that starts a new epoch (its master restarted, failed over to a replica that
//! missed the last writes, or was flushed) marks its directories incomplete: invalidations of
//! the dependencies homed there visit every shard meanwhile. A repair pass walks every
//! shard's index keys and sets, at each incomplete home, the bit of every shard that holds a
//! slice of one of its dependencies; puts during the pass set their own bits. It first renews
//! every shard's directory version, so that puts which skip registering (they remember
//! having registered: `registrations.rs`) either ran before and are found by the pass, or
//! are refused and register again. When the pass
//! is over, the mark is removed, unless a newer epoch set it again.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::router::Invocation;
use super::scripts::{DIRECTORY_VERSION, REPAIRED};
use super::RedisBackend;
use crate::dep::Dep;
use crate::error::Result;

impl RedisBackend {
    /// Starts the task that repairs directories: once now (shards that began their first
    /// epoch, or a new one while no process ran), then whenever a shard begins a new epoch
    /// under this process. It ends with the last clone of the backend.
    pub(super) fn spawn_repairer(&self) {
        let alive = Arc::downgrade(&self.alive);
        let repairer = RedisBackend {
            alive: Arc::new(()),
            ..self.clone()
        };
        // The first repair needs no wake-up.
        repairer.router.repair_wanted.notify_one();
        tokio::spawn(async move {
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
                if woken.is_err() {
                    continue;
                }
                if let Err(error) = repairer.repair_directories().await {
                    warn!(%error, "directory repair failed; retrying in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    repairer.router.repair_wanted.notify_one();
                }
            }
        });
    }

    /// Repairs the directories of every shard marked incomplete; returns how many shards
    /// were repaired.
    pub(crate) async fn repair_directories(&self) -> Result<usize> {
        let layout = self.router.layout();
        if layout.len() == 1 {
            return Ok(0);
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
        let incomplete: BTreeMap<usize, String> = marks
            .into_iter()
            .enumerate()
            .filter_map(|(home, (mark, _))| Some((home, mark?)))
            .collect();
        if incomplete.is_empty() {
            return Ok(0);
        }
        // Puts that skipped their registrations under the old versions are refused from now
        // on; those that ran before are in the index slices read below (registrations.rs).
        let versions: Vec<(String, u64)> = self
            .send_all(
                (0..layout.len())
                    .map(|shard| {
                        let mut invocation = Invocation::new(&DIRECTORY_VERSION);
                        invocation.key(layout.shard(shard).directory_version());
                        (shard, invocation.into())
                    })
                    .collect(),
            )
            .await?;
        for (shard, (version, _)) in versions.iter().enumerate() {
            self.router.registrations.learn(shard, version);
        }
        let mut bits = 0u64;
        for (_, shards) in self.router.masters().await? {
            let via = shards[0];
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_index_keys(via, &shards, cursor).await?;
                let mut by_home: BTreeMap<usize, redis::Pipeline> = BTreeMap::new();
                for (shard, key) in keys {
                    let Some(dep) = key
                        .split_once("}:r:")
                        .and_then(|(_, text)| text.parse::<Dep>().ok())
                    else {
                        continue;
                    };
                    let home = layout.home_of(&dep);
                    if incomplete.contains_key(&home) {
                        by_home
                            .entry(home)
                            .or_default()
                            .cmd("SETBIT")
                            .arg(layout.shard(home).directory(&dep))
                            .arg(shard)
                            .arg(1)
                            .ignore();
                        bits += 1;
                    }
                }
                let _: Vec<(redis::Value, u64)> = self
                    .send_all(
                        by_home
                            .into_iter()
                            .map(|(home, pipe)| (home, pipe.into()))
                            .collect(),
                    )
                    .await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
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
        info!(
            shards = incomplete.len(),
            bits, "repaired the directories of shards that started a new epoch"
        );
        Ok(incomplete.len())
    }
}

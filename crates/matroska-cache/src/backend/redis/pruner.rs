//! The background prune, coordinated per shard: every interval, each shard is pruned by the
//! one process that takes its lock (a key in the shard with the interval as its TTL).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::router::Invocation;
use super::scripts::PRUNE_LOCK;
use super::RedisBackend;
use crate::ttl;

impl RedisBackend {
    /// Starts the background prune: every `every`, this process prunes the shards whose
    /// lock it takes.
    pub(super) fn spawn_pruner(&self, every: Duration) {
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
                pruner.prune_round(every).await;
            }
        });
    }

    /// Takes the lock of every shard it can, and prunes those.
    async fn prune_round(&self, every: Duration) {
        let layout = self.router.layout();
        let mut locked = Vec::new();
        for shard in 0..layout.len() {
            let lock = async {
                let (taken, _): (u8, u64) = self
                    .send(shard, |_| {
                        let mut invocation = Invocation::new(&PRUNE_LOCK);
                        invocation
                            .key(layout.shard(shard).prune_lock())
                            .arg(std::process::id())
                            .arg(ttl::redis_millis(every));
                        invocation.into()
                    })
                    .await?;
                Ok::<_, crate::Error>(taken == 1)
            };
            match lock.await {
                Ok(true) => locked.push(shard),
                Ok(false) => debug!(shard, "another process prunes this shard"),
                Err(error) => warn!(shard, %error, "background prune could not take a lock"),
            }
        }
        if locked.is_empty() {
            return;
        }
        if let Err(error) = self.repair_directories().await {
            warn!(%error, "directory repair failed; retrying later");
        }
        match self.prune_shards(&locked, |_| {}).await {
            Ok(report) => debug!(?report, shards = locked.len(), "background prune"),
            Err(error) => warn!(%error, "background prune failed; retrying later"),
        }
    }
}

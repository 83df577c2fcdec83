//! Shared setup: one behavioural suite, run against every backend.
//!
//! A test is an `async fn(Harness)`; `backend_tests!` runs each listed test once on the
//! in-memory backend and once on a real `redis-server` that the test starts on a free port.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use matroska_cache::{MatroskaCache, MemoryBackend, RedisBackend};
use matroska_test_support::RedisServer;

/// A cache under test and what is needed to look behind it.
pub struct Harness {
    pub cache: MatroskaCache,
    pub kind: Kind,
}

pub enum Kind {
    Memory(MemoryBackend),
    Redis { server: RedisServer, prefix: String },
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A prefix no other test in this process uses.
pub fn unique_prefix() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn memory() -> Harness {
    let backend = MemoryBackend::builder()
        .max_entries(100_000)
        .build()
        .unwrap();
    Harness {
        cache: MatroskaCache::new(backend.clone()),
        kind: Kind::Memory(backend),
    }
}

pub async fn redis() -> Harness {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let cache = MatroskaCache::redis(&server.url(), &prefix).await.unwrap();
    Harness {
        cache,
        kind: Kind::Redis { server, prefix },
    }
}

impl Harness {
    pub fn is_redis(&self) -> bool {
        matches!(self.kind, Kind::Redis { .. })
    }

    /// Another handle on the same store, as another process would have: a clone for the
    /// in-memory backend, a new connection for Redis.
    pub async fn other_client(&self) -> MatroskaCache {
        match &self.kind {
            Kind::Memory(backend) => MatroskaCache::new(backend.clone()),
            Kind::Redis { server, prefix } => {
                MatroskaCache::redis(&server.url(), prefix).await.unwrap()
            }
        }
    }

    /// A cache on the same store with a small invalidation batch, so that large fan-outs take
    /// the batched path.
    pub async fn with_batch_size(&self, batch: usize) -> MatroskaCache {
        match &self.kind {
            Kind::Memory(backend) => MatroskaCache::new(backend.clone()),
            Kind::Redis { server, prefix } => MatroskaCache::new(
                RedisBackend::builder(&server.url(), prefix)
                    .batch_size(batch)
                    .build()
                    .await
                    .unwrap(),
            ),
        }
    }

    /// A cache on the same store whose every duration setting is `Duration::MAX` ("no
    /// limit"): timeouts, lease timeout, ticket age, prune interval.
    pub async fn with_unlimited_durations(&self) -> MatroskaCache {
        let max = std::time::Duration::MAX;
        let builder = match &self.kind {
            Kind::Memory(_) => MatroskaCache::builder(
                MemoryBackend::builder()
                    .max_ticket_age(max)
                    .build()
                    .unwrap(),
            ),
            Kind::Redis { server, prefix } => MatroskaCache::builder(
                RedisBackend::builder(&server.url(), prefix)
                    .timeout(max)
                    .connect_timeout(max)
                    .max_ticket_age(max)
                    .auto_prune(Some(max))
                    .build()
                    .await
                    .unwrap(),
            ),
        };
        builder.lease_timeout(max).build().unwrap()
    }

    /// `Backend::begin` with a lease on `key`, straight on this harness's backend.
    pub async fn begin_with_lease(&self, key: &str) -> matroska_cache::Lease {
        use matroska_cache::Backend;
        let lease = Some((rand_holder(), std::time::Duration::from_secs(10)));
        match &self.kind {
            Kind::Memory(backend) => backend.begin(key, lease).await.unwrap().1,
            Kind::Redis { server, prefix } => {
                let backend = RedisBackend::builder(&server.url(), prefix)
                    .build()
                    .await
                    .unwrap();
                backend.begin(key, lease).await.unwrap().1
            }
        }
    }

    /// The number of members across all dependency indexes of this cache.
    pub fn index_members(&self) -> u64 {
        match &self.kind {
            Kind::Memory(backend) => backend.index_size().1,
            Kind::Redis { server, prefix } => {
                let mut conn = server.connection();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{{{prefix}}}:r:*"))
                    .query(&mut conn)
                    .unwrap();
                // Cache keys are UTF-8; the invalidation marks' field names are not.
                keys.iter()
                    .map(|k| {
                        let fields: Vec<Vec<u8>> =
                            redis::cmd("HKEYS").arg(k).query(&mut conn).unwrap();
                        fields
                            .iter()
                            .filter(|f| std::str::from_utf8(f).is_ok())
                            .count() as u64
                    })
                    .sum()
            }
        }
    }
}

/// Runs each listed `async fn(Harness)` on both backends.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::memory().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::redis().await).await;
                }
            )*
        }
    };
}

fn rand_holder() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed) + 1_000_000
}

//! Shared setup: one behavioural suite, run against every backend.
//!
//! A test is an `async fn(Harness)`; `backend_tests!` runs each listed test once on the
//! in-memory backend, once on a real `redis-server` that the test starts on a free port, and
//! on a local Redis Cluster (3 masters, 3 replicas) that one test per file starts and runs
//! them all on, each under its own prefix.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use matroska_cache::{MatroskaCache, MemoryBackend, RedisBackend, RedisBackendBuilder};
use matroska_test_support::{RedisCluster, RedisServer};

/// A cache under test and what is needed to look behind it.
pub struct Harness {
    pub cache: MatroskaCache,
    pub kind: Kind,
}

pub enum Kind {
    Memory(MemoryBackend),
    Redis {
        server: RedisServer,
        prefix: String,
    },
    /// A prefix on a cluster shared by the tests of one file.
    Cluster {
        urls: Vec<String>,
        prefix: String,
    },
}

/// Shards of the caches the cluster tests build: several per master, and few enough that a
/// test reads every shard quickly.
pub const CLUSTER_SHARDS: u16 = 16;

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

/// A harness on `cluster`, under a prefix of its own.
pub async fn cluster(cluster: &RedisCluster) -> Harness {
    let prefix = unique_prefix();
    let urls = cluster.urls();
    let cache = MatroskaCache::new(cluster_builder(&urls, &prefix).build().await.unwrap());
    Harness {
        cache,
        kind: Kind::Cluster { urls, prefix },
    }
}

fn cluster_builder(urls: &[String], prefix: &str) -> RedisBackendBuilder {
    RedisBackend::cluster_builder(urls, prefix).shards(CLUSTER_SHARDS)
}

impl Harness {
    /// Whether the store is Redis (one server or a cluster).
    pub fn is_redis(&self) -> bool {
        !matches!(self.kind, Kind::Memory(_))
    }

    /// A builder for another backend on the same Redis store (`None` in memory).
    pub fn redis_builder(&self) -> Option<RedisBackendBuilder> {
        match &self.kind {
            Kind::Memory(_) => None,
            Kind::Redis { server, prefix } => Some(RedisBackend::builder(&server.url(), prefix)),
            Kind::Cluster { urls, prefix } => Some(cluster_builder(urls, prefix)),
        }
    }

    /// The prefix of a Redis store.
    pub fn prefix(&self) -> Option<&str> {
        match &self.kind {
            Kind::Memory(_) => None,
            Kind::Redis { prefix, .. } | Kind::Cluster { prefix, .. } => Some(prefix),
        }
    }

    /// Blocking connections to every server that holds keys (the masters of a cluster).
    pub fn connections(&self) -> Vec<redis::Connection> {
        match &self.kind {
            Kind::Memory(_) => Vec::new(),
            Kind::Redis { server, .. } => vec![server.connection()],
            Kind::Cluster { urls, .. } => urls
                .iter()
                .filter_map(|url| {
                    let mut conn = redis::Client::open(url.as_str())
                        .ok()?
                        .get_connection()
                        .ok()?;
                    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
                    matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
                        .then_some(conn)
                })
                .collect(),
        }
    }

    /// Every key of this cache's prefix, on every server.
    pub fn redis_keys(&self) -> Vec<String> {
        let Some(prefix) = self.prefix() else {
            return Vec::new();
        };
        let pattern = match &self.kind {
            Kind::Cluster { .. } => format!("{{{prefix}#*"),
            _ => format!("{{{prefix}}}:*"),
        };
        let mut keys = Vec::new();
        for mut conn in self.connections() {
            let mut found: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).unwrap();
            keys.append(&mut found);
        }
        keys.sort();
        keys
    }

    /// Another handle on the same store, as another process would have: a clone for the
    /// in-memory backend, a new connection for Redis.
    pub async fn other_client(&self) -> MatroskaCache {
        match (&self.kind, self.redis_builder()) {
            (Kind::Memory(backend), _) => MatroskaCache::new(backend.clone()),
            (_, Some(builder)) => MatroskaCache::new(builder.build().await.unwrap()),
            (_, None) => unreachable!(),
        }
    }

    /// A cache builder on the same store, as another process would have.
    pub async fn other_builder(&self) -> matroska_cache::MatroskaCacheBuilder {
        match (&self.kind, self.redis_builder()) {
            (Kind::Memory(backend), _) => MatroskaCache::builder(backend.clone()),
            (_, Some(builder)) => MatroskaCache::builder(builder.build().await.unwrap()),
            (_, None) => unreachable!(),
        }
    }

    /// A cache on the same store with a small invalidation batch, so that large fan-outs take
    /// the batched path.
    pub async fn with_batch_size(&self, batch: usize) -> MatroskaCache {
        match (&self.kind, self.redis_builder()) {
            (Kind::Memory(backend), _) => MatroskaCache::new(backend.clone()),
            (_, Some(builder)) => {
                MatroskaCache::new(builder.batch_size(batch).build().await.unwrap())
            }
            (_, None) => unreachable!(),
        }
    }

    /// A cache on the same store whose every duration setting is `Duration::MAX` ("no
    /// limit"): timeouts, lease timeout, ticket age, prune interval.
    pub async fn with_unlimited_durations(&self) -> MatroskaCache {
        let max = std::time::Duration::MAX;
        let builder = match self.redis_builder() {
            None => MatroskaCache::builder(
                MemoryBackend::builder()
                    .max_ticket_age(max)
                    .build()
                    .unwrap(),
            ),
            Some(builder) => MatroskaCache::builder(
                builder
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
        use matroska_cache::backend::Want;
        use matroska_cache::Backend;
        let lease = Some((rand_holder(), std::time::Duration::from_secs(10)));
        match (&self.kind, self.redis_builder()) {
            (Kind::Memory(backend), _) => backend.begin(key, lease, Want::fresh()).await.unwrap().1,
            (_, Some(builder)) => {
                let backend = builder.build().await.unwrap();
                backend.begin(key, lease, Want::fresh()).await.unwrap().1
            }
            (_, None) => unreachable!(),
        }
    }

    /// The number of members across all dependency indexes of this cache.
    pub fn index_members(&self) -> u64 {
        if let Kind::Memory(backend) = &self.kind {
            return backend.index_size().1;
        }
        let mut conns = self.connections();
        self.redis_keys()
            .iter()
            .filter(|k| k.contains("}:r:"))
            .map(|k| {
                conns
                    .iter_mut()
                    .map(|conn| {
                        let fields: Vec<Vec<u8>> =
                            redis::cmd("HKEYS").arg(k).query(conn).unwrap_or_default();
                        // Cache keys are UTF-8; old invalidation marks' field names are not.
                        fields
                            .iter()
                            .filter(|f| std::str::from_utf8(f).is_ok())
                            .count() as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Runs each listed `async fn(Harness)` on every backend: a test per function in memory and
/// on one server; on a cluster, one test that starts a cluster and runs them all on it.
#[macro_export]
macro_rules! backend_tests {
    (without_cluster: $($name:ident),* $(,)?) => {
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
    ($($name:ident),* $(,)?) => {
        #[test]
        fn on_a_cluster() {
            let cluster = ::matroska_test_support::RedisCluster::start();
            let runtime = ::tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            $(
                eprintln!("on a cluster: {}", stringify!($name));
                runtime.block_on(async {
                    $name(support::cluster(&cluster).await).await;
                });
            )*
        }

        $crate::backend_tests!(without_cluster: $($name),*);
    };
}

fn rand_holder() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed) + 1_000_000
}

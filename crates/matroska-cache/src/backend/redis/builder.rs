//! Configuring and connecting a [`RedisBackend`], on one server or a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{ConnectionInfo, IntoConnectionInfo};
use tracing::{debug, warn};

use super::connection;
use super::keys::Layout;
use super::router::{Router, RouterSettings};
use super::{
    RedisBackend, DEFAULT_AUTO_PRUNE, DEFAULT_BATCH_SIZE, DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_OPEN_FOR, DEFAULT_TIMEOUT,
};
use crate::backend::DEFAULT_MAX_TICKET_AGE;
use crate::error::{Error, Result};

/// The default number of shards on a Redis Cluster: enough for every master of a cluster of
/// up to about 40 to serve at least three (see `docs/cluster.md`).
pub const DEFAULT_CLUSTER_SHARDS: u16 = 128;

/// Configures and connects a [`RedisBackend`]. Its `Debug` output shows the URLs with their
/// passwords redacted ([`redact_url`]).
#[must_use]
pub struct RedisBackendBuilder {
    urls: Vec<String>,
    /// `None`: ask the first server that answers.
    cluster: Option<bool>,
    prefix: String,
    shards: Option<u16>,
    /// Take the number of shards recorded for the prefix, if there is one.
    adopt_shards: bool,
    timeout: Duration,
    connect_timeout: Duration,
    batch_size: usize,
    max_ticket_age: Duration,
    check_eviction_policy: bool,
    auto_prune: Option<Duration>,
    require_replicas: Option<(usize, Duration)>,
    /// Consecutive failures that open a server's breaker, and for how long.
    circuit_breaker: Option<(u32, Duration)>,
    #[cfg(feature = "tls")]
    tls_root_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("RedisBackendBuilder")
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .field("adopt_shards", &self.adopt_shards)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("batch_size", &self.batch_size)
            .field("max_ticket_age", &self.max_ticket_age)
            .field("check_eviction_policy", &self.check_eviction_policy)
            .field("auto_prune", &self.auto_prune)
            .field("require_replicas", &self.require_replicas)
            .finish_non_exhaustive()
    }
}

/// `url` with its password replaced by `***`, wherever a Redis URL can hold one: after the
/// user (`redis://user:secret@host`, `rediss://:secret@host`) or as a query parameter
/// (`redis+unix:///run/redis.sock?pass=secret`, `password=`). For logs and error messages.
///
/// ```
/// use matroska_cache::backend::redis::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@10.0.0.1:6379/0"), "redis://app:***@10.0.0.1:6379/0");
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
///     "redis+unix:///run/redis.sock?db=1&pass=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{userinfo}@{host}"),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _))
                    if ["pass", "password"].contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    format!("{name}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl RedisBackend {
    /// A builder for one server at `url` (`redis://[user:password@]host[:port][/db]`) and
    /// `prefix`, under which every key of this cache lives.
    pub fn builder(url: &str, prefix: &str) -> RedisBackendBuilder {
        RedisBackendBuilder::new(vec![url.to_owned()], Some(false), prefix)
    }

    /// A builder for one server or a Redis Cluster at `nodes`, whichever the first server
    /// that answers says it is (`INFO cluster`): for tools, such as the `matroska` CLI, that
    /// are pointed at either.
    pub fn detecting_builder(
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
        prefix: &str,
    ) -> RedisBackendBuilder {
        let urls = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        RedisBackendBuilder::new(urls, None, prefix)
    }

    /// A builder for a Redis Cluster reachable at any of `nodes` (`redis://host:port/` each;
    /// one is enough, the others are tried when it is down), and `prefix`. The cache is
    /// split into [`DEFAULT_CLUSTER_SHARDS`] shards spread over the masters
    /// ([`shards`](RedisBackendBuilder::shards) changes it).
    ///
    /// ```no_run
    /// use matroska_cache::{MatroskaCache, RedisBackend};
    ///
    /// # async fn demo() -> Result<(), matroska_cache::Error> {
    /// let nodes = ["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"];
    /// let backend = RedisBackend::cluster_builder(nodes, "cache").shards(128).build().await?;
    /// let cache = MatroskaCache::new(backend);
    /// # Ok(()) }
    /// ```
    pub fn cluster_builder(
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
        prefix: &str,
    ) -> RedisBackendBuilder {
        let urls = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        RedisBackendBuilder::new(urls, Some(true), prefix)
    }
}

impl RedisBackendBuilder {
    fn new(urls: Vec<String>, cluster: Option<bool>, prefix: &str) -> Self {
        RedisBackendBuilder {
            urls,
            cluster,
            prefix: prefix.to_owned(),
            shards: None,
            adopt_shards: false,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            batch_size: DEFAULT_BATCH_SIZE,
            max_ticket_age: DEFAULT_MAX_TICKET_AGE,
            check_eviction_policy: true,
            auto_prune: Some(DEFAULT_AUTO_PRUNE),
            require_replicas: None,
            circuit_breaker: Some((DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_OPEN_FOR)),
            #[cfg(feature = "tls")]
            tls_root_certificate: None,
        }
    }

    /// Trust this root certificate (PEM) for `rediss://` connections instead of the
    /// platform's roots: for servers with a private certificate authority.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// How TLS connections (`rediss://`, `valkeys://`, any case: what the URL parser calls
    /// TLS) are made: with the root certificate given, or the platform's. Plain URLs need
    /// nothing.
    #[cfg(feature = "tls")]
    fn tls(&self, seeds: &[ConnectionInfo]) -> Result<Option<super::tls::Tls>> {
        if !seeds.iter().any(is_tls) {
            return Ok(None);
        }
        super::tls::Tls::new(self.tls_root_certificate.as_deref()).map(Some)
    }

    /// The circuit breaker of each server (on by default: [`DEFAULT_BREAKER_FAILURES`]
    /// consecutive failures, open for [`DEFAULT_BREAKER_OPEN_FOR`]): after `failures`
    /// timeouts or connection failures in a row, calls to that server fail at once with
    /// [`Error::Unavailable`] for `open_for` (`get_or_compute` computes instead, without
    /// waiting out the timeout); then one call probes it, and its answer closes the
    /// breaker. [`Stats`](crate::Stats) counts openings and fast failures.
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.circuit_breaker = Some((failures, open_for));
        self
    }

    /// No circuit breaker: every call to a server that does not answer waits out the
    /// timeout.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.circuit_breaker = None;
        self
    }

    /// Into how many shards (1 to 1,024) the cache is split, each with its own hash tag.
    /// Default: 1 on one server, [`DEFAULT_CLUSTER_SHARDS`] on a cluster.
    ///
    /// Every process sharing the prefix must use the same number: the first one records it
    /// under the prefix, and [`build`](Self::build) refuses another with
    /// [`Error::InvalidConfig`] naming both (another count would read the prefix's
    /// directories and fence tables in its own numbering, and its invalidations would not
    /// reach the others' entries). To change it, move to a new prefix.
    pub fn shards(mut self, shards: u16) -> Self {
        self.shards = Some(shards);
        self.adopt_shards = false;
        self
    }

    /// Uses the number of shards recorded for the prefix by the processes that use it
    /// (the default of [`shards`](Self::shards) when none is recorded yet): for tools, such
    /// as the `matroska` CLI, that work on a cache configured elsewhere.
    pub fn shards_of_prefix(mut self) -> Self {
        self.shards = None;
        self.adopt_shards = true;
        self
    }

    /// How long one operation may take, including its retries while a cluster fails over
    /// or moves slots, before it fails with [`Error::Timeout`] (default [`DEFAULT_TIMEOUT`]).
    /// A long invalidation is many operations, each bounded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting (and each reconnect attempt) may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many index members one atomic batch of an invalidation or prune handles
    /// (default [`DEFAULT_BATCH_SIZE`]). Larger batches are faster and block Redis longer.
    pub fn batch_size(mut self, members: usize) -> Self {
        self.batch_size = members;
        self
    }

    /// How old a ticket may be when its fenced put runs (default
    /// [`DEFAULT_MAX_TICKET_AGE`]): a longer computation is not cached.
    pub fn max_ticket_age(mut self, age: Duration) -> Self {
        self.max_ticket_age = age;
        self
    }

    /// How often a background task prunes the dependency index (default
    /// [`DEFAULT_AUTO_PRUNE`]), or `None` for never (then call
    /// [`MatroskaCache::prune`](crate::MatroskaCache::prune) yourself, or run `matroska prune`).
    ///
    /// Of all processes sharing the prefix, one at a time prunes (a lock key in Redis with the
    /// interval as its TTL). The task ends when the last clone of the backend is dropped.
    pub fn auto_prune(mut self, every: Option<Duration>) -> Self {
        self.auto_prune = every;
        self
    }

    /// Makes every `invalidate` wait until `replicas` replicas of each master it wrote to
    /// have acknowledged its writes (`WAIT`), for at most `timeout`; fewer acknowledgements
    /// return [`Error::Replication`] (the invalidation itself completed on the masters).
    ///
    /// Without it, replication is asynchronous: a master that fails right after an
    /// invalidation returned can hand over to a replica that never saw it. The epoch rule
    /// still hides every entry the promoted replica holds (its shards start cold), so no
    /// stale entry is served; what is lost is the certainty that the invalidation reached a
    /// second machine before the caller was told it succeeded.
    ///
    /// `timeout` must be below the operation [`timeout`](Self::timeout). The `WAIT` goes on
    /// a connection of its own per master, after a write on that connection (so that it
    /// covers everything sent to the master before), and only to the masters the
    /// invalidation wrote to: while it blocks, this process's other commands to that master
    /// go on as usual. A replica that stops answering costs each invalidation this long.
    pub fn require_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.require_replicas = Some((replicas, timeout));
        self
    }

    /// Skip checking `maxmemory-policy` at connect (it is read from `INFO memory`), for a
    /// proxy that does not report it.
    ///
    /// Only call this if you know the policy is `noeviction` or `volatile-*`: under an
    /// `allkeys-*` policy Redis may evict an index and invalidations are lost.
    pub fn assume_safe_eviction_policy(mut self) -> Self {
        self.check_eviction_policy = false;
        self
    }

    /// Connects, checks the server's version and eviction policy (on every master of a
    /// cluster), and returns the backend.
    ///
    /// Fails promptly with [`Error::InvalidUrl`], [`Error::Redis`] or [`Error::Timeout`] if a
    /// URL is malformed or no server is reachable, and with
    /// [`Error::UnsafeEvictionPolicy`] if Redis could evict indexes.
    pub async fn build(self) -> Result<RedisBackend> {
        if self.urls.is_empty() {
            return Err(Error::InvalidConfig("no Redis URL given".into()));
        }
        let seeds = self
            .urls
            .iter()
            .map(|url| {
                url.as_str()
                    .into_connection_info()
                    .map(|info| info.set_tcp_settings(connection::tcp_settings()))
                    .map_err(|e| Error::InvalidUrl(e.into()))
            })
            .collect::<Result<Vec<_>>>()?;
        // Cluster nodes found later connect as the first seed does: a list mixing TLS and
        // plaintext would send the password in clear to some of them.
        if seeds.iter().any(is_tls) && !seeds.iter().all(is_tls) {
            return Err(Error::InvalidConfig(
                "the Redis URLs mix TLS (rediss://) and plaintext (redis://): use one scheme"
                    .into(),
            ));
        }
        let cluster = match self.cluster {
            Some(cluster) => cluster,
            None => self.is_cluster(&seeds).await?,
        };
        let settings = || {
            Ok::<_, Error>(RouterSettings {
                seeds: seeds.clone(),
                cluster,
                connect_timeout: self.connect_timeout,
                #[cfg(feature = "tls")]
                tls: self.tls(&seeds)?,
            })
        };
        let mut shards = self
            .shards
            .unwrap_or(if cluster { DEFAULT_CLUSTER_SHARDS } else { 1 });
        if self.adopt_shards {
            let probe = Router::new(Layout::new(&self.prefix, 1)?, settings()?);
            probe.refresh().await?;
            if let Some(recorded) = read_shard_count(&probe, self.timeout).await? {
                shards = recorded;
            }
        }
        let layout = Layout::new(&self.prefix, shards)?;
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig("batch_size must be at least 1".into()));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be above zero".into()));
        }
        if let Some((replicas, timeout)) = self.require_replicas {
            if replicas == 0 || timeout.is_zero() || timeout >= self.timeout {
                return Err(Error::InvalidConfig(
                    "require_replicas needs at least one replica and a timeout above zero and \
                     below the operation timeout"
                        .into(),
                ));
            }
        }
        let breaker = match self.circuit_breaker {
            Some((failures, open_for)) if failures == 0 || open_for.is_zero() => {
                return Err(Error::InvalidConfig(
                    "the circuit breaker needs at least one failure and an open time above zero"
                        .into(),
                ))
            }
            Some((failures, open_for)) => Some(super::breaker::Settings {
                failures,
                open_for,
                openings: Arc::default(),
                label: Arc::from(self.prefix.as_str()),
            }),
            None => None,
        };
        let router = Router::new(layout, settings()?);
        let backend = RedisBackend {
            breaker,
            alive: Arc::new(()),
            router: Arc::new(router),
            prefix: Arc::from(self.prefix.as_str()),
            timeout: self.timeout,
            batch_size: self.batch_size,
            max_ticket_age: self.max_ticket_age,
            require_replicas: self.require_replicas,
        };
        backend.router.refresh().await?;
        for (node, _) in backend.router.masters().await? {
            let session = node.session().await?;
            check_version(&session.version)?;
            if !session.stable_identity {
                warn!(
                    server = node.address(),
                    "this Redis endpoint reports no run_id or master_replid (a proxy?): every \
                     reconnect starts a new epoch, and the cache reads empty after it; connect \
                     to the servers themselves if you can"
                );
            }
            if self.check_eviction_policy {
                // From `INFO memory`, read at connect: no `CONFIG GET`, which would also let
                // the cache's user read `requirepass` and `masterauth`.
                let policy = session.eviction_policy.clone().ok_or_else(|| {
                    Error::EvictionPolicyUnknown(crate::error::ServerError::cluster(
                        "ERR",
                        "INFO memory reports no maxmemory_policy",
                    ))
                })?;
                if connection::evicts_indexes(&policy) {
                    return Err(Error::UnsafeEvictionPolicy { policy });
                }
                debug!(%policy, "Redis eviction policy is safe for dependency indexes");
            }
        }
        backend.check_shard_count().await?;
        // Every shard's epoch now, so that no ticket taken from here on predates a shard's
        // first epoch (a new epoch refuses older tickets: see epoch.lua).
        let router = &backend.router;
        try_join_all((0..router.layout().len()).map(|shard| router.route(shard))).await?;
        if router.layout().len() > 1 {
            backend.spawn_repairer();
        }
        match self.auto_prune {
            Some(every) if every.is_zero() => {
                return Err(Error::InvalidConfig(
                    "the auto-prune interval must be above zero".into(),
                ))
            }
            Some(every) => backend.spawn_pruner(every),
            None => {}
        }
        Ok(backend)
    }
}

/// Whether the parsed URL asks for TLS, whatever its scheme was spelled.
fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
}

/// The number of shards recorded for the prefix of `router`'s layout, if any.
async fn read_shard_count(router: &Router, timeout: Duration) -> Result<Option<u16>> {
    let key = router.layout().shard_count_key();
    let recorded: Option<String> = router
        .send_unsharded(&key, redis::cmd("GET").arg(&key).clone().into(), timeout)
        .await?;
    recorded
        .map(|text| parse_shard_count(&key, &text))
        .transpose()
}

fn parse_shard_count(key: &str, text: &str) -> Result<u16> {
    text.parse().map_err(|_| Error::Corrupt {
        key: key.to_owned(),
        detail: format!("the number of shards {text:?} is not a number"),
    })
}

impl RedisBackend {
    /// The number of shards this backend splits the cache into (1 on one server unless
    /// configured otherwise): see [`RedisBackendBuilder::shards`].
    pub fn shards(&self) -> u16 {
        u16::try_from(self.router.layout().len()).expect("at most 1,024 shards")
    }

    /// Records this backend's number of shards for the prefix, or checks it against the
    /// one recorded: another number is an [`Error::InvalidConfig`] naming both. Run at
    /// build, and before every repair or prune pass (the record could have been lost with a
    /// failover, and written again by a process configured otherwise).
    pub(super) async fn check_shard_count(&self) -> Result<()> {
        let layout = self.router.layout();
        let key = layout.shard_count_key();
        let mut invocation = super::router::Invocation::new(&super::scripts::SHARD_COUNT);
        invocation.key(&key).arg(layout.len());
        let recorded: String = self
            .router
            .send_unsharded(&key, invocation.into(), self.timeout)
            .await?;
        let recorded = parse_shard_count(&key, &recorded)?;
        if usize::from(recorded) != layout.len() {
            return Err(Error::InvalidConfig(
                format!(
                    "this backend is configured with {} shards, but prefix {:?} is laid out \
                     in {recorded}: every process and the CLI must use the same number \
                     (RedisBackendBuilder::shards, or shards_of_prefix to take the \
                     prefix's); to change it, move to a new prefix",
                    layout.len(),
                    &*self.prefix,
                )
                .into(),
            ));
        }
        Ok(())
    }
}

impl RedisBackendBuilder {
    /// Whether the first of `seeds` that answers runs in cluster mode.
    async fn is_cluster(&self, seeds: &[redis::ConnectionInfo]) -> Result<bool> {
        let mut last_error = None;
        for seed in seeds {
            let client =
                redis::Client::open(seed.clone()).map_err(|e| Error::InvalidUrl(e.into()))?;
            let node = super::connection::Node::new("seed", client, self.connect_timeout, 0);
            #[cfg(feature = "tls")]
            let node = node.with_tls(self.tls(seeds)?);
            let attempt = async {
                let mut conn = node.session().await?.conn.clone();
                let info: String = tokio::time::timeout(
                    self.timeout,
                    redis::cmd("INFO").arg("cluster").query_async(&mut conn),
                )
                .await
                .map_err(|_| Error::Timeout(self.timeout))??;
                Ok::<_, Error>(info.contains("cluster_enabled:1"))
            };
            match attempt.await {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(Error::InvalidConfig("no Redis URL given".into())))
    }
}

fn check_version(version: &str) -> Result<()> {
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(Error::UnsupportedServer {
            version: version.to_owned(),
        });
    }
    Ok(())
}

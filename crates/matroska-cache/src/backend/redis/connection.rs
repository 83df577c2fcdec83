//! One server: its multiplexed connection, reconnected on demand, and the shard epochs
//! handshaken on it.
//!
//! Why not redis-rs's `ConnectionManager` (or its cluster client): they reconnect in the
//! background and send the next command on the new connection at once. After a restart that
//! reloaded an older snapshot, or a failover to a replica that missed the last writes, that
//! command could read an entry whose invalidation had already returned. Here a new
//! connection serves a shard only after `epoch.lua` ran for that shard on it (see
//! [`super::router`]): a server whose run id changed starts a new epoch, the [`Session`]
//! carries the epoch's floor, and readers ignore entries written below it (see the README's
//! "Persistence and restarts").
//!
//! A command that fails because the connection broke marks its session broken; the next
//! command connects again (bounded by the connect timeout) and handshakes before it is sent.
//!
//! **Identity.** A server's identity is its run id *and* its replication id. A server that
//! was demoted to a replica, full-resynced from a master that had missed the last writes, and
//! was promoted again (a failover and failback) keeps its run id and its client
//! connections, but its data went back in time; its promotion gave it a new replication id.
//! So a handshake on another replication id starts a new epoch, and a session idle for more
//! than [`IDLE_CHECK`] checks the replication id before it serves again (while it is in use,
//! a demoted master answers `MOVED` or `READONLY`, which sends the router elsewhere).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::io::tcp::{socket2, TcpSettings};
use redis::AsyncConnectionConfig;
use tracing::debug;

use crate::error::{Error, Result};

/// A shard not handshaken on a session. Floors are generations, which never get near it.
const UNKNOWN: u64 = u64::MAX;

/// How long a session may go unused before it checks, before serving again, that its server
/// is still the master it connected to with the same data history (see the module docs).
pub(crate) const IDLE_CHECK: Duration = Duration::from_millis(200);

/// The clock of [`Session::touch`].
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    ms_since_start(Instant::now())
}

fn ms_since_start(instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(*START).as_millis()).unwrap_or(u64::MAX)
}

/// TCP keepalive on every connection: idle this long before the first probe, then a probe
/// every [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] in all.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
))]
const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may go unacknowledged before the kernel breaks the connection
/// (`TCP_USER_TIMEOUT`, Linux).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The TCP settings of every connection: a server that vanished without a reset (a
/// partition that drops packets, a dead host) breaks the connection within about 30 s,
/// rather than after the kernel's 15 minutes of retransmissions, and the session is retired.
/// (A hung server process, `SIGSTOP`, still has its kernel acknowledge: the request timeout
/// and the router deal with that; see `RedisBackend::send`.)
pub(crate) fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    let settings = TcpSettings::default().set_keepalive(keepalive);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
}

/// [`tcp_settings`] on a socket opened by hand (TLS connections).
#[cfg(feature = "tls")]
pub(crate) fn tune(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let settings = tcp_settings();
    let socket = socket2::SockRef::from(tcp);
    if let Some(keepalive) = settings.keepalive() {
        socket.set_tcp_keepalive(keepalive)?;
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    socket.set_tcp_user_timeout(settings.user_timeout())?;
    Ok(())
}

/// Whether a `maxmemory-policy` may evict keys without a TTL, such as dependency indexes
/// (which would lose invalidations).
pub(crate) fn evicts_indexes(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// A connection to one server process.
pub(crate) struct Session {
    pub(crate) conn: MultiplexedConnection,
    /// The server's `redis_version`.
    pub(crate) version: String,
    /// `<run id>/<replication id>`: a restart, a promoted replica, and a master demoted and
    /// promoted again each have another (see the module docs).
    pub(crate) identity: String,
    /// Whether the server reported its run id and replication id (else each connection
    /// starts a new epoch: see [`identity_of`]).
    pub(crate) stable_identity: bool,
    /// The replication id part of the identity.
    replication_id: String,
    /// The server's `maxmemory_policy` (`INFO memory`), if it reports one.
    pub(crate) eviction_policy: Option<String>,
    /// When a reply last came on this connection ([`now_ms`]).
    last_used: AtomicU64,
    /// When anything last came on this connection, an error reply too ([`now_ms`]).
    last_heard: AtomicU64,
    /// Held while an idle session checks its server's identity.
    checking: tokio::sync::Mutex<()>,
    /// The epoch floor of each shard handshaken on this connection ([`UNKNOWN`] for the
    /// others): read on every request, so without a lock.
    floors: Box<[AtomicU64]>,
    broken: AtomicBool,
}

impl Session {
    /// Stops using this connection: the next command connects again. Called when a command
    /// failed with the connection.
    pub(crate) fn retire(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Retires the session if `error` broke its connection.
    pub(crate) fn check(&self, error: &redis::RedisError) {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
        {
            self.retire();
        }
    }

    /// The floor of `shard`'s epoch, if it was handshaken on this connection.
    pub(crate) fn floor(&self, shard: usize) -> Option<u64> {
        let floor = self.floors.get(shard)?.load(Ordering::Acquire);
        (floor != UNKNOWN).then_some(floor)
    }

    pub(crate) fn set_floor(&self, shard: usize, floor: u64) {
        if let Some(slot) = self.floors.get(shard) {
            slot.store(floor, Ordering::Release);
        }
    }

    /// Forgets `shard`'s epoch: the next command for it handshakes again (it moved, or was
    /// flushed under this connection).
    pub(crate) fn forget(&self, shard: usize) {
        if let Some(slot) = self.floors.get(shard) {
            slot.store(UNKNOWN, Ordering::Release);
        }
    }

    fn is_live(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
    }

    /// Notes that a reply came: the server was the same a moment ago.
    pub(crate) fn touch(&self) {
        self.last_used.fetch_max(now_ms(), Ordering::Relaxed);
        self.heard();
    }

    /// Notes that an error reply came (`MOVED`, `NOSCRIPT`, ...): the connection works, but
    /// says nothing of the server's data (a demoted master answers `MOVED`).
    pub(crate) fn heard(&self) {
        self.last_heard.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Whether nothing came on this connection since `since`.
    pub(crate) fn silent_since(&self, since: Instant) -> bool {
        self.last_heard.load(Ordering::Relaxed) < ms_since_start(since)
    }

    fn idle(&self) -> bool {
        now_ms().saturating_sub(self.last_used.load(Ordering::Relaxed))
            > u64::try_from(IDLE_CHECK.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the server may still be trusted with this session's epochs: always while the
    /// session is in use; after [`IDLE_CHECK`] without a reply, only if the server is still a
    /// master with the replication id it had at connect (else the session is retired and
    /// the caller connects again, handshaking a new epoch). One check at a time; the others
    /// wait for it.
    pub(crate) async fn still_trusted(&self, limit: Duration) -> Result<bool> {
        if !self.idle() {
            return Ok(true);
        }
        let _one_check = self.checking.lock().await;
        if !self.idle() {
            return Ok(true);
        }
        let mut conn = self.conn.clone();
        let info: String = tokio::time::timeout(
            limit,
            redis::cmd("INFO").arg("replication").query_async(&mut conn),
        )
        .await
        .map_err(|_| Error::Timeout(limit))?
        .inspect_err(|e| self.check(e))?;
        let (role, replication_id) = replication(&info);
        if role.as_deref() == Some("master")
            && replication_id.as_deref() == Some(&self.replication_id)
        {
            self.touch();
            return Ok(true);
        }
        debug!(
            ?role,
            ?replication_id,
            "the server's data history changed; reconnecting"
        );
        self.retire();
        Ok(false)
    }
}

/// The value of `name` (with its colon) in an `INFO` reply.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_owned())
}

/// The role and the replication id in an `INFO replication` reply.
/// A server's identity from its `INFO`: `<run id>/<replication id>`, its replication id,
/// and whether both were there. A server without them (a proxy, say) gets a random one, so
/// a new epoch on every connection: the safe side, since a restart behind it cannot be told
/// apart, but the cache then reads empty after every reconnect.
fn identity_of(info: &str) -> (String, String, bool) {
    let unknown = || format!("unknown-{}", rand::random::<u64>());
    let run_id = info_field(info, "run_id:");
    let replication_id = replication(info).1;
    let stable = run_id.is_some() && replication_id.is_some();
    let run_id = run_id.unwrap_or_else(unknown);
    let replication_id = replication_id.unwrap_or_else(unknown);
    (format!("{run_id}/{replication_id}"), replication_id, stable)
}

fn replication(info: &str) -> (Option<String>, Option<String>) {
    (
        info_field(info, "role:"),
        info_field(info, "master_replid:"),
    )
}

/// One server address: connects, reconnects, and hands out the current [`Session`].
pub(crate) struct Node {
    /// `host:port`, or `standalone`.
    name: String,
    /// `host:port` (for messages).
    address: String,
    client: redis::Client,
    connect_timeout: Duration,
    /// How many shards the cache has (each session keeps a floor per shard).
    shards: usize,
    current: Mutex<Option<Arc<Session>>>,
    /// Held while connecting, so that concurrent commands wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
    /// A connection of its own for `WAIT`, which blocks the connection it is sent on (see
    /// `RedisBackend::wait_for_replicas`); opened on first use.
    waiter: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// How to open `rediss://` connections.
    #[cfg(feature = "tls")]
    tls: Option<super::tls::Tls>,
    /// Fails calls at once while the server does not answer.
    pub(crate) breaker: super::breaker::Breaker,
}

impl Node {
    pub(crate) fn new(
        name: &str,
        client: redis::Client,
        connect_timeout: Duration,
        shards: usize,
    ) -> Self {
        Node {
            name: name.to_owned(),
            address: super::router::addr_of(client.get_connection_info()),
            client,
            connect_timeout,
            shards,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            waiter: tokio::sync::Mutex::new(None),
            #[cfg(feature = "tls")]
            tls: None,
            breaker: super::breaker::Breaker::default(),
        }
    }

    /// `host:port`, or `standalone`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `host:port`, also of the `standalone` node.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Opens `rediss://` connections with `tls`.
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(mut self, tls: Option<super::tls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// A new multiplexed connection: plain through redis-rs, TLS through [`super::tls`].
    async fn dial(
        &self,
        config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        #[cfg(feature = "tls")]
        if let (
            Some(tls),
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            },
        ) = (&self.tls, self.client.get_connection_info().addr())
        {
            if *insecure {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "TLS without certificate verification (#insecure) is not supported",
                )));
            }
            let redis = self.client.get_connection_info().redis_settings();
            return tls.connect(host, *port, redis, config.clone()).await;
        }
        self.client
            .get_multiplexed_async_connection_with_config(config)
            .await
    }

    /// The session to send a command on: the current one, or a new connection.
    pub(crate) async fn session(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.live() {
            return Ok(session);
        }
        let _one_attempt = self.connecting.lock().await;
        if let Some(session) = self.live() {
            return Ok(session); // another command connected meanwhile
        }
        let session = Arc::new(self.open().await?);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&session));
        Ok(session)
    }

    /// The connection for `WAIT`s (see the field): no epoch handshake, since nothing is read
    /// on it.
    pub(crate) async fn waiter(&self) -> Result<MultiplexedConnection> {
        let mut waiter = self.waiter.lock().await;
        if let Some(conn) = &*waiter {
            return Ok(conn.clone());
        }
        let limit = self.connect_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(None);
        let conn = tokio::time::timeout(limit, self.dial(&config))
            .await
            .map_err(|_| Error::Timeout(limit))??;
        *waiter = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the `WAIT` connection after it failed: the next `WAIT` connects again.
    pub(crate) async fn retire_waiter(&self) {
        *self.waiter.lock().await = None;
    }

    /// The current session, if it is live, without connecting.
    pub(crate) fn live(&self) -> Option<Arc<Session>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|s| s.is_live())
            .cloned()
    }

    async fn open(&self) -> Result<Session> {
        let limit = self.connect_timeout;
        let attempt = async {
            // No response timeout of redis-rs's own (500 ms by default): every request is
            // sent under the backend's timeout (see `RedisBackend::send`), which may be
            // longer, and one timer per request is enough.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(None);
            let mut conn = self.dial(&config).await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .arg("replication")
                .arg("memory")
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((conn, info))
        };
        let (conn, info) = tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| Error::Timeout(limit))??;
        let field = |name: &str| info_field(&info, name);
        let version = field("redis_version:").unwrap_or_else(|| "unknown".into());
        let (identity, replication_id, stable_identity) = identity_of(&info);
        let eviction_policy = field("maxmemory_policy:");
        debug!(%identity, %version, ?eviction_policy, "connected to Redis");
        if eviction_policy.as_deref().is_some_and(evicts_indexes) {
            // Checked at build; a replica promoted since, or a CONFIG SET, can change it.
            tracing::error!(
                node = %self.name,
                policy = ?eviction_policy,
                "this Redis server may evict dependency indexes and lose invalidations: set \
                 maxmemory-policy to volatile-lru (or noeviction)"
            );
        }
        Ok(Session {
            conn,
            version,
            identity,
            stable_identity,
            replication_id,
            eviction_policy,
            last_used: AtomicU64::new(now_ms()),
            last_heard: AtomicU64::new(now_ms()),
            checking: tokio::sync::Mutex::new(()),
            floors: (0..self.shards).map(|_| AtomicU64::new(UNKNOWN)).collect(),
            broken: AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_run_id_has_no_stable_identity() {
        let server = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n# Replication\r\nrole:master\r\nmaster_replid:r1\r\n";
        let (identity, replication_id, stable) = identity_of(server);
        assert_eq!(
            (identity.as_str(), replication_id.as_str(), stable),
            ("abc/r1", "r1", true)
        );
        let proxy = "# Server\r\nredis_version:7.0.15\r\n# Replication\r\nrole:master\r\n";
        let (first, _, stable) = identity_of(proxy);
        assert!(!stable);
        // Each connection is another epoch.
        assert_ne!(first, identity_of(proxy).0);
    }
}

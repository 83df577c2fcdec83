//! One multiplexed connection to Redis, and the epoch handshake that guards it.
//!
//! Why not redis-rs's `ConnectionManager`: it reconnects in the background and sends the next
//! command on the new connection at once. After a restart that reloaded an older snapshot,
//! that command could read an entry whose invalidation had already returned. Here every new
//! connection first runs `epoch.lua`, which starts a new epoch when the server's run id
//! changed; the [`Session`] carries the epoch's floor, and readers ignore entries written
//! below it (see the README's "Persistence and restarts").
//!
//! A command that fails because the connection broke marks its session broken; the next
//! command connects again (bounded by the connect timeout) and handshakes before it is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tracing::{debug, info};

use super::entry;
use super::keys::KeySpace;
use super::scripts::EPOCH;
use crate::error::{Error, Result};

/// A connection to one server process, with the epoch it handshook.
pub(crate) struct Session {
    pub(crate) conn: MultiplexedConnection,
    /// Entries with a lower generation predate the epoch: they read as misses.
    pub(crate) floor: u64,
    /// The server's `redis_version`.
    pub(crate) version: String,
    broken: AtomicBool,
}

impl Session {
    /// Stops using this connection: the next command connects again. Called when a command
    /// failed with the connection, or found the server in another epoch.
    pub(crate) fn retire(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Retires the session if `error` broke its connection, or is a script's refusal to run
    /// on a connection of another epoch.
    pub(crate) fn check(&self, error: &redis::RedisError) {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
            || is_epoch_change(error)
        {
            self.retire();
        }
    }

    /// Whether the stored entry `bytes` (or its first 20 bytes) was written in this session's
    /// epoch; one from before a restart reads as a miss.
    pub(crate) fn holds(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        Ok(entry::generation(key, bytes)? >= self.floor)
    }
}

/// The error code of that refusal (see `put.lua` and `begin.lua`).
pub(crate) const EPOCH_CHANGE: &str = "EPOCH";

/// Whether a script refused to run because the caller's connection handshook another epoch
/// (the prefix was flushed under it): the caller retries once on a new session.
fn is_epoch_change(error: &redis::RedisError) -> bool {
    error.code() == Some(EPOCH_CHANGE)
}

/// Connects, reconnects, and hands out the current [`Session`].
pub(crate) struct Connection {
    client: redis::Client,
    keys: KeySpace,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Session>>>,
    /// Held while connecting, so that concurrent commands wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
    /// How to open `rediss://` connections.
    #[cfg(feature = "tls")]
    tls: Option<super::tls::Tls>,
}

impl Connection {
    pub(crate) fn new(client: redis::Client, keys: KeySpace, connect_timeout: Duration) -> Self {
        Connection {
            client,
            keys,
            connect_timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            #[cfg(feature = "tls")]
            tls: None,
        }
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

    /// The session to send a command on: the current one, or a new connection that has
    /// handshaken.
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

    fn live(&self) -> Option<Arc<Session>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|s| !s.broken.load(Ordering::SeqCst))
            .cloned()
    }

    async fn open(&self) -> Result<Session> {
        let limit = self.connect_timeout;
        let attempt = async {
            let config = AsyncConnectionConfig::new().set_connection_timeout(Some(limit));
            let mut conn = self.dial(&config).await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let version = field("redis_version:").unwrap_or_else(|| "unknown".into());
            // A server without a run id (a proxy, say) gets a new epoch on every connection:
            // the safe side, since a restart behind it cannot be told apart.
            let run_id =
                field("run_id:").unwrap_or_else(|| format!("unknown-{}", rand::random::<u64>()));
            let floor: u64 = EPOCH
                .key(self.keys.epoch())
                .key(self.keys.sequence())
                .arg(&run_id)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((conn, floor, version, run_id))
        };
        let (conn, floor, version, run_id) = tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| Error::Timeout(limit))??;
        debug!(floor, %run_id, "connected to Redis");
        if self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|old| old.floor != floor)
        {
            info!(floor, "Redis is in a new epoch (it restarted or was flushed): older entries read as misses");
        }
        Ok(Session {
            conn,
            floor,
            version,
            broken: AtomicBool::new(false),
        })
    }
}

//! The one error type of the crate.

use std::time::Duration;

use crate::dep::ParseDepError;

/// Everything that can go wrong in a cache operation.
///
/// Each variant's documentation says what to do about it. The enum is `#[non_exhaustive]`: match
/// the variants you handle and keep a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TTL was zero or above [`MAX_TTL`](crate::ttl::MAX_TTL) (100 years); the same rule
    /// holds on every backend.
    ///
    /// Pass a TTL above zero (below a millisecond rounds up to one) and at most `MAX_TTL`. A
    /// cache entry that expires at once is almost always a bug, so it is refused instead of
    /// silently not stored.
    #[error("invalid TTL {ttl:?}: it must be above zero and at most 100 years")]
    InvalidTtl {
        /// The TTL that was passed.
        ttl: Duration,
    },

    /// A write was given a key longer than [`MAX_KEY_LEN`](crate::key::MAX_KEY_LEN) (1 KiB).
    ///
    /// A key is copied into every dependency's index, which no eviction policy frees, so long
    /// keys are refused instead of pinning memory. Store under a digest of what makes the key
    /// (`#[cached]` does this by itself); `get_or_compute` computes without storing.
    #[error(
        "a key of {length} bytes is longer than the 1024 a write accepts (it begins {head:?})"
    )]
    KeyTooLong {
        /// The key's length in bytes.
        length: usize,
        /// Its first 64 bytes.
        head: String,
    },

    /// A builder was given a setting that cannot work.
    ///
    /// The message names the setting and what it accepts.
    #[error("invalid configuration: {0}")]
    InvalidConfig(std::borrow::Cow<'static, str>),

    /// The Redis key prefix is empty.
    ///
    /// Every key of a cache lives under its prefix (which also forms the Redis Cluster hash
    /// tag), so choose a non-empty name such as `"cache"` or `"tenant-42"`.
    #[error("invalid prefix: the Redis key prefix must not be empty")]
    EmptyPrefix,

    /// A dependency's text form could not be parsed.
    ///
    /// See [`Dep`](crate::Dep) for the syntax; `id:article:1` and `tag:homepage` are examples.
    #[error(transparent)]
    ParseDep(#[from] ParseDepError),

    /// A [`Scopes`](crate::scopes::Scopes) is misconfigured (development mode only; in
    /// production mode the same cases degrade safely and log a warning).
    ///
    /// The reason names the condition or extractor: declare the condition with
    /// `describes()`, make its `PARAMS` match the names it serializes, or fix the extractor.
    #[error("scope of {object_type:?}: {reason}")]
    Scope {
        /// The scope's item type name.
        object_type: String,
        /// What is wrong.
        reason: String,
    },

    /// A value that should serialize as a struct or map (to compare its fields) did not.
    ///
    /// [`changed_fields`](crate::changes::changed_fields) compares named fields; pass structs
    /// or maps.
    #[error("expected a value that serializes as a struct or map, found {found}")]
    NotAStruct {
        /// What it serialized as.
        found: &'static str,
    },

    /// The value could not be serialized.
    ///
    /// The value's `Serialize` implementation failed (for example a map with non-string keys
    /// under JSON). Fix the type or store a different representation.
    #[error("cannot encode the value for key {key:?}: {source}")]
    Encode {
        /// The cache key.
        key: String,
        /// What the serializer reported.
        #[source]
        source: serde_json::Error,
    },

    /// The cached value does not decode as the requested type.
    ///
    /// Usually a type changed between the writer and the reader (a deploy in progress, or two
    /// services sharing a key). Delete the key or invalidate its dependencies; `get_or_compute`
    /// treats this as a miss.
    #[error("the cached value of key {key:?} does not decode as the requested type: {reason}")]
    Decode {
        /// The cache key.
        key: String,
        /// What the decoder reported.
        reason: String,
    },

    /// The stored entry is not in a format this version understands.
    ///
    /// Another program (or a newer version of this library) wrote under the same prefix. Give
    /// each program its own prefix, or delete the key.
    #[error("the entry of key {key:?} is not in a known format ({detail})")]
    Corrupt {
        /// The cache key.
        key: String,
        /// What was found.
        detail: String,
    },

    /// The Redis URL could not be parsed or names an unsupported scheme.
    ///
    /// Use `redis://[user:password@]host[:port][/db]`, or `rediss://` with the `tls` feature.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] ServerError),

    /// Redis's eviction policy could drop a dependency index while its entries live, which
    /// would lose invalidations.
    ///
    /// Set `maxmemory-policy` to `volatile-lru`, `volatile-lfu`, `volatile-ttl`,
    /// `volatile-random` or `noeviction` (`CONFIG SET maxmemory-policy volatile-lru` and in
    /// `redis.conf`). Entries always carry a TTL and indexes never do, so a `volatile-*`
    /// policy evicts entries only.
    #[error(
        "Redis maxmemory-policy is {policy:?}, which can evict dependency indexes and lose \
         invalidations; run `CONFIG SET maxmemory-policy volatile-lru` (or noeviction) and \
         set it in redis.conf"
    )]
    UnsafeEvictionPolicy {
        /// The policy the server reported.
        policy: String,
    },

    /// The eviction policy could not be read, so its safety could not be checked.
    ///
    /// It is read from `INFO memory` (`maxmemory_policy`), which every Redis 7 reports; a
    /// proxy in front of Redis may not. If you have checked the policy yourself, call
    /// [`RedisBackendBuilder::assume_safe_eviction_policy`](crate::RedisBackendBuilder::assume_safe_eviction_policy).
    /// (Do not grant the cache's user `CONFIG GET` for this: it also reads `requirepass` and
    /// `masterauth`.)
    #[error(
        "cannot read Redis maxmemory_policy to check that indexes cannot be evicted ({0}); \
         if you checked it yourself, call assume_safe_eviction_policy()"
    )]
    EvictionPolicyUnknown(#[source] ServerError),

    /// The Redis server is older than 7.0, which this backend needs (script flags let an
    /// invalidation run even on a full server).
    ///
    /// Upgrade Redis (or use a compatible server such as Valkey 7.2+).
    #[error("Redis {version} is too old: matroska-cache needs Redis 7.0 or newer")]
    UnsupportedServer {
        /// The version the server reported.
        version: String,
    },

    /// Redis failed, refused the command, or could not be reached in time.
    ///
    /// Transient faults (connection loss, a restart) clear by themselves: the connection
    /// manager reconnects in the background, so retry later. An `invalidate` that failed may
    /// have dropped some dependents; retrying it drops the rest.
    #[error("Redis error: {0}")]
    Redis(#[source] ServerError),

    /// The Tokio runtime shut down while an operation that must finish once begun (an
    /// invalidation, a transaction's commit and invalidation) was running in its own task.
    ///
    /// Whether it completed is unknown. Run it again on a live runtime: invalidating twice is
    /// harmless.
    #[error("the Tokio runtime shut down before the operation finished")]
    RuntimeShutdown,

    /// An invalidation completed on the masters, but fewer replicas than
    /// [`require_replicas`](crate::RedisBackendBuilder::require_replicas) asked for
    /// acknowledged it within its timeout.
    ///
    /// The entries are gone from the masters. If a master fails over now, a replica that
    /// missed the invalidation becomes master: the epoch rule still hides what it brings
    /// back, so nothing stale is served, but say so to your caller or retry (invalidating
    /// again is harmless) once the replicas are back.
    #[error("only {acknowledged} of {wanted} replicas acknowledged the invalidation in time")]
    Replication {
        /// Replicas asked for.
        wanted: usize,
        /// Replicas that acknowledged, on the server that had the fewest.
        acknowledged: usize,
    },

    /// A server's circuit breaker is open: it stopped answering (timeouts, lost connections)
    /// and calls to it fail at once instead of waiting out the timeout.
    ///
    /// Transient: after the breaker's `open_for`, one call probes the server, and the
    /// breaker closes when it answers. `get_or_compute` computes instead, counted as a
    /// fault. See `RedisBackendBuilder::circuit_breaker`.
    #[error("Redis at {server} is not answering (circuit breaker open)")]
    Unavailable {
        /// `host:port` of the server (`standalone` on one server).
        server: String,
    },

    /// A Redis operation did not complete within the configured timeout.
    ///
    /// Redis is unreachable, overloaded or blocked. Retry later; the connection recovers by
    /// itself when Redis answers again.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl Error {
    /// Whether retrying the same operation later may succeed: Redis was unreachable, timed
    /// out, restarting, loading, busy or failing over, or the runtime shut down mid-way.
    /// Everything else (a bad value, TTL, configuration or URL, an unsafe server) fails the
    /// same way again until something is changed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout(_)
            | Error::Unavailable { .. }
            | Error::RuntimeShutdown
            | Error::Replication { .. } => true,
            Error::Redis(error) => error.is_transient(),
            _ => false,
        }
    }

    /// Whether the connection to Redis broke or was refused.
    #[cfg(feature = "redis")]
    pub(crate) fn is_connection_loss(&self) -> bool {
        matches!(self, Error::Redis(error) if error.connection)
    }
}

/// A failure reported by Redis or by the connection to it.
///
/// Opaque on purpose: the crate's API does not expose the redis client's types, so its
/// versions can change without breaking yours. [`source`](std::error::Error::source) leads to
/// the client's own error for logging.
#[derive(Debug)]
pub struct ServerError {
    message: String,
    code: Option<String>,
    transient: bool,
    /// The connection broke or was refused (the request may or may not have run).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    connection: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ServerError {
    /// The error code the server replied with (`NOSCRIPT`, `OOM`, `LOADING`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether it may clear by itself: the connection broke or was refused, the server is
    /// loading, busy, read-only after a failover, or asked to try again.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// A cluster condition the backend found itself (no master for a slot, a malformed
    /// slot map), with the server's code for it.
    #[cfg(feature = "redis")]
    pub(crate) fn cluster(code: &str, message: &str) -> Self {
        ServerError {
            message: format!("{code} {message}"),
            code: Some(code.to_owned()),
            transient: true,
            connection: false,
            source: None,
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Server reply codes after which the same request may succeed later.
#[cfg(feature = "redis")]
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "NOREPLICAS",
    "EPOCH",
    "MOVED",
    "ASK",
];

#[cfg(feature = "redis")]
impl From<redis::RedisError> for ServerError {
    fn from(error: redis::RedisError) -> Self {
        let code = error.code().map(str::to_owned);
        let connection =
            error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal();
        let transient = connection
            || error.is_timeout()
            || code
                .as_deref()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c));
        ServerError {
            message: error.to_string(),
            code,
            transient,
            connection,
            source: Some(Box::new(error)),
        }
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        Error::Redis(error.into())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

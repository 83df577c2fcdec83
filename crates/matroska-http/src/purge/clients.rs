//! Purge clients for Fastly and Cloudflare (the `purge-clients` feature): each is a
//! [`PurgeHook`] that purges the invalidated dependencies' surrogate keys through the CDN's
//! API, in batches the API accepts.
//!
//! - **Fastly:** `POST {endpoint}/service/{service id}/purge` with the keys in a
//!   `Surrogate-Key` header, at most 256 per request, authenticated by `Fastly-Key`;
//!   optionally soft (`Fastly-Soft-Purge: 1`: marked stale rather than dropped).
//! - **Cloudflare:** `POST {endpoint}/zones/{zone id}/purge_cache` with `{"tags": [...]}`, at
//!   most 30 per request, authenticated by a bearer token.
//!
//! A request that fails for a reason that may pass (no answer, `429 Too Many Requests`, a
//! `5xx`) is retried twice, after the `Retry-After` the API sent (at most 30 s) or a short
//! backoff; then it is logged (`tracing` warning, with the number of keys; the keys
//! themselves at `debug`). The next invalidation of the same dependencies purges them again,
//! and the pages' TTL bounds what a lost purge can leave at the edge. Call
//! [`FastlyPurger::purge_keys`] or [`CloudflarePurger::purge_keys`] directly to handle
//! failures yourself.
//!
//! Each request, its answer's body included, is bounded by a timeout (10 s, or
//! `timeout(..)`), and at most 64 KiB of an answer is read. Endpoints must be `https://`
//! (plain `http://` only on loopback, for mock servers): the API token must not travel in
//! clear. Service and zone IDs must be letters and digits; tokens are marked sensitive
//! (HTTP/2 never indexes them).
//!
//! ```no_run
//! use matroska_cache::{MatroskaCache, MemoryBackend};
//! use matroska_http::purge::{clients::FastlyPurger, purging};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fastly = FastlyPurger::new("SERVICE_ID", "API_TOKEN")?;
//! let cache = MatroskaCache::builder(MemoryBackend::default())
//!     .on_invalidate(purging(fastly))
//!     .build()?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use matroska_cache::Dep;
use tracing::{debug, warn};

use super::PurgeHook;
use crate::surrogate::{Cdn, SurrogateKeys};

/// Why a purge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The HTTPS client could not be built (no usable root certificates, say).
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    /// A setting that cannot go into a request (a token with a line break, say).
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("purge request failed: {0}")]
    Request(String),
    /// The API answered with an error status.
    #[error("the CDN answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the answer's body.
        body: String,
    },
}

/// How long one purge request may take, unless set.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's body that is read (error messages, quoted in [`PurgeError`]).
const MAX_ANSWER: usize = 64 * 1024;
/// Tries of one request whose failure may pass.
const TRIES: u32 = 3;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The HTTP(S) client both purgers use.
#[derive(Clone)]
struct Api {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    endpoint: String,
    timeout: Duration,
}

impl Api {
    fn new(endpoint: &str) -> Result<Api, PurgeError> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| PurgeError::Invalid(format!("the endpoint {endpoint:?} is not a URL")))?;
        let loopback = uri.host().is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => {
                return Err(PurgeError::Invalid(format!(
                    "the endpoint {endpoint:?} must be https:// (http:// only on loopback): \
                     the API token must not travel in clear"
                )))
            }
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            // rustls's ring provider, chosen per client: the process-wide default is neither
            // read nor installed (as for the core's `tls` feature).
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| PurgeError::Client(e.to_string()))?
            // Plain HTTP only for the loopback endpoints checked above.
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Api {
            client,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Sends the request `make` builds, again after a failure that may pass.
    async fn post(
        &self,
        make: impl Fn() -> Result<Request<Body>, PurgeError>,
    ) -> Result<(), PurgeError> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=TRIES {
            let (error, retry_after) = match self.post_once(make()?).await {
                Ok(()) => return Ok(()),
                Err(failed) => failed,
            };
            let passing = match &error {
                PurgeError::Request(_) => true,
                PurgeError::Status { status, .. } => {
                    *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
                }
                _ => false,
            };
            if !passing || attempt == TRIES {
                return Err(error);
            }
            let wait = retry_after.unwrap_or(backoff).min(MAX_RETRY_AFTER);
            debug!(%error, ?wait, attempt, "purge request failed; trying again");
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
        unreachable!("the last try returns")
    }

    /// One request, its answer read whole (at most [`MAX_ANSWER`]) within the timeout; a
    /// failure with the `Retry-After` the API asked for.
    async fn post_once(
        &self,
        request: Request<Body>,
    ) -> Result<(), (PurgeError, Option<Duration>)> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| (PurgeError::Request(e.to_string()), None))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                return Err((PurgeError::Status { status, body }, retry_after));
            }
            Ok(())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| (PurgeError::Request("timed out".into()), None))?
    }
}

/// A service or zone ID: letters and digits only, so that it cannot lead the request (and
/// the token) to another path.
fn id(kind: &str, text: &str) -> Result<String, PurgeError> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PurgeError::Invalid(format!(
            "the {kind} must be letters and digits"
        )));
    }
    Ok(text.to_owned())
}

/// A token's header value, marked sensitive.
fn secret(text: &str) -> Result<HeaderValue, PurgeError> {
    let mut value = header_value(text)?;
    value.set_sensitive(true);
    Ok(value)
}

fn header_value(text: &str) -> Result<HeaderValue, PurgeError> {
    HeaderValue::from_str(text).map_err(|_| PurgeError::Invalid("a header value".into()))
}

#[derive(Clone)]
struct FastlyInner {
    api: Api,
    service: String,
    token: HeaderValue,
    soft: bool,
    keys: SurrogateKeys,
}

/// Purges surrogate keys at Fastly. Cheap to clone.
#[derive(Clone)]
pub struct FastlyPurger {
    inner: Arc<FastlyInner>,
}

impl FastlyPurger {
    /// Fastly's batch size.
    pub const BATCH: usize = 256;

    /// A purger for the Fastly service `service_id`, authenticated with the API token
    /// `token` (it needs the `purge_select` scope), keys as [`SurrogateKeys::new`] of
    /// [`Cdn::Fastly`] writes them.
    pub fn new(service_id: &str, token: &str) -> Result<FastlyPurger, PurgeError> {
        Ok(FastlyPurger {
            inner: Arc::new(FastlyInner {
                api: Api::new("https://api.fastly.com")?,
                service: id("service ID", service_id)?,
                token: secret(token)?,
                soft: false,
                keys: SurrogateKeys::new(Cdn::Fastly),
            }),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut FastlyInner)) -> FastlyPurger {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Another API endpoint (a local mock server in tests); `https://api.fastly.com` by
    /// default. Must be `https://` (`http://` only on loopback).
    pub fn endpoint(self, url: &str) -> Result<FastlyPurger, PurgeError> {
        let mut api = Api::new(url)?;
        api.timeout = self.inner.api.timeout;
        Ok(self.with(|inner| inner.api = api))
    }

    /// How long one request, its answer included, may take (default 10 s).
    pub fn timeout(self, timeout: Duration) -> FastlyPurger {
        self.with(|inner| inner.api.timeout = timeout)
    }

    /// Soft purges: objects are marked stale instead of dropped.
    pub fn soft(self, soft: bool) -> FastlyPurger {
        self.with(|inner| inner.soft = soft)
    }

    /// The surrogate keys the layer writes (the same fallback key, say).
    pub fn keys(self, keys: SurrogateKeys) -> FastlyPurger {
        self.with(|inner| inner.keys = keys)
    }

    /// Purges `keys`, [`Self::BATCH`] per request, one request after another; stops at the
    /// first failure.
    pub async fn purge_keys(&self, keys: &[String]) -> Result<(), PurgeError> {
        let inner = &self.inner;
        for batch in keys.chunks(Self::BATCH) {
            let url = format!("{}/service/{}/purge", inner.api.endpoint, inner.service);
            let keys = header_value(&batch.join(" "))?;
            let make = || {
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(&url)
                    .header("fastly-key", inner.token.clone())
                    .header("surrogate-key", keys.clone())
                    .header(header::ACCEPT, "application/json");
                if inner.soft {
                    request = request.header("fastly-soft-purge", "1");
                }
                request
                    .body(Body::empty())
                    .map_err(|e| PurgeError::Invalid(e.to_string()))
            };
            inner.api.post(make).await?;
            debug!(keys = batch.len(), "purged at Fastly");
        }
        Ok(())
    }
}

impl PurgeHook for FastlyPurger {
    fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let keys = this.inner.keys.purge_keys(&deps);
            if let Err(error) = this.purge_keys(&keys).await {
                warn!(%error, keys = keys.len(), "Fastly purge failed");
                debug!(?keys, "the keys of the failed Fastly purge");
            }
        })
    }
}

#[derive(Clone)]
struct CloudflareInner {
    api: Api,
    zone: String,
    token: HeaderValue,
    keys: SurrogateKeys,
}

/// Purges cache tags at Cloudflare. Cheap to clone.
#[derive(Clone)]
pub struct CloudflarePurger {
    inner: Arc<CloudflareInner>,
}

impl CloudflarePurger {
    /// Cloudflare's batch size for tags.
    pub const BATCH: usize = 30;

    /// A purger for the zone `zone_id`, authenticated with the API token `token` (it needs
    /// the Cache Purge permission), tags as [`SurrogateKeys::new`] of [`Cdn::Cloudflare`]
    /// writes them.
    pub fn new(zone_id: &str, token: &str) -> Result<CloudflarePurger, PurgeError> {
        Ok(CloudflarePurger {
            inner: Arc::new(CloudflareInner {
                api: Api::new("https://api.cloudflare.com/client/v4")?,
                zone: id("zone ID", zone_id)?,
                token: secret(&format!("Bearer {token}"))?,
                keys: SurrogateKeys::new(Cdn::Cloudflare),
            }),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut CloudflareInner)) -> CloudflarePurger {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Another API endpoint (a local mock server in tests);
    /// `https://api.cloudflare.com/client/v4` by default. Must be `https://` (`http://` only
    /// on loopback).
    pub fn endpoint(self, url: &str) -> Result<CloudflarePurger, PurgeError> {
        let mut api = Api::new(url)?;
        api.timeout = self.inner.api.timeout;
        Ok(self.with(|inner| inner.api = api))
    }

    /// How long one request, its answer included, may take (default 10 s).
    pub fn timeout(self, timeout: Duration) -> CloudflarePurger {
        self.with(|inner| inner.api.timeout = timeout)
    }

    /// The cache tags the layer writes (the same fallback key, say).
    pub fn keys(self, keys: SurrogateKeys) -> CloudflarePurger {
        self.with(|inner| inner.keys = keys)
    }

    /// Purges `tags`, [`Self::BATCH`] per request, one request after another; stops at the
    /// first failure.
    pub async fn purge_keys(&self, tags: &[String]) -> Result<(), PurgeError> {
        let inner = &self.inner;
        for batch in tags.chunks(Self::BATCH) {
            let url = format!("{}/zones/{}/purge_cache", inner.api.endpoint, inner.zone);
            let body = serde_json::json!({ "tags": batch }).to_string();
            let make = || {
                Request::builder()
                    .method(Method::POST)
                    .uri(&url)
                    .header(header::AUTHORIZATION, inner.token.clone())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.clone()))
                    .map_err(|e| PurgeError::Invalid(e.to_string()))
            };
            inner.api.post(make).await?;
            debug!(tags = batch.len(), "purged at Cloudflare");
        }
        Ok(())
    }
}

impl PurgeHook for CloudflarePurger {
    fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let tags = this.inner.keys.purge_keys(&deps);
            if let Err(error) = this.purge_keys(&tags).await {
                warn!(%error, tags = tags.len(), "Cloudflare purge failed");
                debug!(?tags, "the tags of the failed Cloudflare purge");
            }
        })
    }
}

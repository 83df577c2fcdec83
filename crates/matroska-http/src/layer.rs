//! The tower layer and its service: which requests are served from the cache, which
//! responses are stored, and how.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use matroska_cache::{with_dependencies, Dep, MatroskaCache};
use tower::{Layer, Service};
use tracing::{debug, warn};

use crate::stored::{matches, Stored, X_CACHE};
use crate::surrogate::SurrogateKeys;

/// What a request's `Cache-Control: no-cache` (or `Pragma: no-cache`) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestNoCache {
    /// The handler runs again and its response replaces the cached one (the default).
    #[default]
    Refresh,
    /// The cached response is served: entries are dropped when what they were built from
    /// changes, so they are never stale, and a client cannot make the handler run.
    Ignore,
}

/// How a request that carries `Authorization` or `Cookie` is keyed: the user's part of the
/// key, or `None` to bypass the cache.
type PerUser = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct Config {
    cache: MatroskaCache,
    ttl: Duration,
    max_body: usize,
    statuses: Vec<StatusCode>,
    no_cache: RequestNoCache,
    per_user: Option<PerUser>,
    deps: Vec<Dep>,
    surrogate: Option<SurrogateKeys>,
    prefix: String,
}

/// A tower layer that caches `GET` (and `HEAD`) responses in a [`MatroskaCache`], each with
/// the dependencies its handler declared, so that `cache.invalidate(..)` drops them.
///
/// ```
/// use axum::{routing::get, Router};
/// use matroska_cache::{dep, depends_on, MatroskaCache};
/// use matroska_http::CacheLayer;
/// use std::time::Duration;
///
/// async fn show_post() -> String {
///     depends_on([dep::id("post", 1)]);
///     "<h1>Post 1</h1>".to_owned()
/// }
///
/// let cache = MatroskaCache::in_memory();
/// let app: Router = Router::new()
///     .route("/posts/{id}", get(show_post))
///     .layer(CacheLayer::new(cache.clone(), Duration::from_secs(60)));
/// ```
///
/// See the [crate documentation](crate) for what is stored and what passes through.
#[derive(Clone)]
pub struct CacheLayer {
    config: Arc<Config>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("ttl", &self.config.ttl)
            .field("max_body", &self.config.max_body)
            .field("statuses", &self.config.statuses)
            .field("no_cache", &self.config.no_cache)
            .field("per_user", &self.config.per_user.is_some())
            .field("deps", &self.config.deps)
            .field("surrogate", &self.config.surrogate)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

/// The body size above which a response passes through uncached, unless set.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

impl CacheLayer {
    /// Caches responses in `cache` for at most `ttl` (a TTL the cache refuses, such as zero,
    /// stores nothing: each such response is a cache fault, logged and counted).
    pub fn new(cache: MatroskaCache, ttl: Duration) -> CacheLayer {
        CacheLayer {
            config: Arc::new(Config {
                cache,
                ttl,
                max_body: DEFAULT_MAX_BODY,
                statuses: vec![StatusCode::OK],
                no_cache: RequestNoCache::default(),
                per_user: None,
                deps: Vec::new(),
                surrogate: None,
                prefix: "http".to_owned(),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> CacheLayer {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Responses with a larger body pass through uncached (default: 1 MiB).
    pub fn max_body(self, bytes: usize) -> CacheLayer {
        self.with(|c| c.max_body = bytes)
    }

    /// Stores responses with these statuses too (200 always is), such as 404 or 301.
    pub fn also_status(self, statuses: impl IntoIterator<Item = StatusCode>) -> CacheLayer {
        self.with(|c| c.statuses.extend(statuses))
    }

    /// What a request's `Cache-Control: no-cache` does (default: [`RequestNoCache::Refresh`]).
    pub fn request_no_cache(self, no_cache: RequestNoCache) -> CacheLayer {
        self.with(|c| c.no_cache = no_cache)
    }

    /// Caches requests carrying `Authorization` or `Cookie` (which bypass the cache without
    /// this) under a per-user key: `key` returns the user's identity (after verifying it;
    /// the layer runs before the handler), or `None` to bypass.
    pub fn per_user(
        self,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.per_user = Some(Arc::new(key)))
    }

    /// Adds `deps` to every response this layer stores (per-route tags).
    pub fn depends_on(self, deps: impl IntoIterator<Item = Dep>) -> CacheLayer {
        self.with(|c| c.deps.extend(deps))
    }

    /// Writes a surrogate-key header for a CDN on every cached response.
    pub fn surrogate_keys(self, keys: SurrogateKeys) -> CacheLayer {
        self.with(|c| c.surrogate = Some(keys))
    }

    /// The first part of every cache key (default `http`): layers with different prefixes
    /// sharing one cache keep apart.
    pub fn key_prefix(self, prefix: &str) -> CacheLayer {
        self.with(|c| c.prefix = prefix.to_owned())
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`CacheLayer`] wraps around a handler.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this request (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(serve(config, inner, request))
    }
}

/// Why a computed response is not stored.
enum Uncached<E> {
    /// It may not or cannot be stored: it goes to the client as it is.
    Response(Response<Body>),
    /// The handler failed.
    Failed(E),
}

async fn serve<S>(
    config: Arc<Config>,
    mut inner: S,
    request: Request<Body>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send,
    S::Error: Send,
{
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return inner.call(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let user = if is_private(&parts.headers) {
        match config.per_user.as_ref().and_then(|key| key(&parts)) {
            Some(user) => Some(user),
            None => {
                let response = inner.call(Request::from_parts(parts, body)).await?;
                return Ok(labelled(response, "BYPASS"));
            }
        }
    } else {
        None
    };
    let base = base_key(&config.prefix, user.as_deref(), &parts);
    let conditional = parts.headers.get(header::IF_NONE_MATCH).cloned();
    let refresh = config.no_cache == RequestNoCache::Refresh && asks_no_cache(&parts.headers);
    if refresh {
        drop_entry(&config, &base, &parts.headers).await;
    }
    // The handler sees a GET: a HEAD is served from the GET's entry.
    parts.method = Method::GET;
    let mut pending = Some(Request::from_parts(parts, body));

    let outcome = config
        .cache
        .get_or_compute(&base, config.ttl, || {
            compute(&config, &mut inner, &mut pending, None)
        })
        .await;
    let stored = match outcome {
        Ok(stored) => stored,
        Err(Uncached::Response(response)) => return Ok(uncached(response, head)),
        Err(Uncached::Failed(error)) => return Err(error),
    };
    // Another variant of the URL has its own entry. Only a hit can be another variant: a
    // response computed for this request (the request was taken) has its values.
    let variant = match &pending {
        Some(request) if !stored.vary.is_empty() && !vary_matches(&stored, request.headers()) => {
            let names: Vec<String> = stored.vary.iter().map(|(name, _)| name.clone()).collect();
            let key = variant_key(&base, &names, request.headers());
            Some((names, key))
        }
        _ => None,
    };
    let (key, stored) = match variant {
        None => (base, stored),
        Some((names, key)) => {
            let outcome = config
                .cache
                .get_or_compute(&key, config.ttl, || {
                    compute(&config, &mut inner, &mut pending, Some(&names))
                })
                .await;
            match outcome {
                Ok(stored) => (key, stored),
                Err(Uncached::Response(response)) => return Ok(uncached(response, head)),
                Err(Uncached::Failed(error)) => return Err(error),
            }
        }
    };
    // The handler ran for this request exactly when the request was taken.
    let label = if pending.is_some() { "HIT" } else { "MISS" };
    let answer = match &conditional {
        Some(tags) if matches(tags, &stored.etag) => stored.not_modified(),
        _ => stored.response(!head),
    };
    let Some(mut response) = answer else {
        // A damaged entry (written by another version, say): drop it and let the next
        // request compute.
        warn!(key, "a cached response does not decode; dropping it");
        let _ = config.cache.delete(&key).await;
        let response = match pending.take() {
            Some(request) => inner.call(request).await?,
            None => Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::empty())
                .unwrap_or_default(),
        };
        return Ok(uncached(response, head));
    };
    if let Some(keys) = &config.surrogate {
        if let Some((name, value)) = keys.header_of_texts(stored.deps.iter().map(String::as_str)) {
            response.headers_mut().insert(name, value);
        }
    }
    debug!(key, label, "response served");
    Ok(labelled(response, label))
}

/// Runs the handler for the request in `pending` (taken, so it runs once) and makes its
/// response storable, or says why it is not. `variant_of`: the `Vary` names the base entry
/// was stored under (a variant must have the same ones).
async fn compute<S>(
    config: &Config,
    inner: &mut S,
    pending: &mut Option<Request<Body>>,
    variant_of: Option<&[String]>,
) -> Result<(Stored, Vec<Dep>), Uncached<S::Error>>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let Some(request) = pending.take() else {
        // Not reachable: each request computes at most once. Safe anyway: nothing stored.
        return Err(Uncached::Response(
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::empty())
                .unwrap_or_default(),
        ));
    };
    let request_headers = request.headers().clone();
    let (result, deps) = with_dependencies(inner.call(request)).await;
    let response = result.map_err(Uncached::Failed)?;
    if let Some(reason) = not_storable(config, &response) {
        debug!(reason, "response not stored");
        return Err(Uncached::Response(response));
    }
    let vary = vary_names(response.headers());
    if vary.iter().any(|name| name == "*") || variant_of.is_some_and(|names| names != vary) {
        return Err(Uncached::Response(response));
    }
    let (parts, body) = response.into_parts();
    let body = match buffer(body, config.max_body).await {
        Ok(bytes) => bytes,
        Err(rest) => {
            debug!("response body over the limit; not stored");
            return Err(Uncached::Response(Response::from_parts(parts, rest)));
        }
    };
    let vary = vary
        .into_iter()
        .map(|name| {
            let value = header_text(&request_headers, &name);
            (name, value)
        })
        .collect();
    let mut deps: Vec<Dep> = config.deps.iter().cloned().chain(deps).collect();
    deps.sort_unstable();
    deps.dedup();
    let texts = deps.iter().map(|d| d.as_str().to_owned()).collect();
    let stored = Stored::new(parts.status, &parts.headers, &body, vary, texts);
    Ok((stored, deps))
}

/// Why a response may not be stored, if it may not.
fn not_storable(config: &Config, response: &Response<Body>) -> Option<&'static str> {
    let headers = response.headers();
    if !config.statuses.contains(&response.status()) {
        return Some("status");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if cache_control_has(headers, &["private", "no-store"]) {
        return Some("cache-control");
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"))
    {
        return Some("event stream");
    }
    if response.body().size_hint().lower() > config.max_body as u64 {
        return Some("body size");
    }
    None
}

/// The whole body if it is at most `max` bytes; otherwise a body that yields what was read
/// and then the rest, for the response to pass through.
async fn buffer(mut body: Body, max: usize) -> Result<Bytes, Body> {
    let mut read: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total += data.len();
                    read.push(data);
                    if total > max {
                        return Err(replay(read, body));
                    }
                }
                // Trailers: a response with trailers is not stored.
                Err(_) => return Err(replay(read, body)),
            },
            Some(Err(error)) => {
                let failed = futures_util::stream::iter(
                    read.into_iter()
                        .map(Ok::<_, axum::Error>)
                        .chain(std::iter::once(Err(error))),
                );
                return Err(Body::from_stream(failed));
            }
        }
    }
    let mut all = BytesMut::with_capacity(total);
    for chunk in read {
        all.extend_from_slice(&chunk);
    }
    Ok(all.freeze())
}

/// `read`, then the rest of `body`.
fn replay(read: Vec<Bytes>, body: Body) -> Body {
    use futures_util::StreamExt as _;
    let head = futures_util::stream::iter(read.into_iter().map(Ok::<_, axum::Error>));
    Body::from_stream(head.chain(body.into_data_stream()))
}

/// Drops the entry a request would be served from (for a `no-cache` request).
async fn drop_entry(config: &Config, base: &str, request_headers: &HeaderMap) {
    let key = match config.cache.get::<Stored>(base).await {
        Ok(Some(stored)) if !stored.vary.is_empty() && !vary_matches(&stored, request_headers) => {
            let names: Vec<String> = stored.vary.iter().map(|(n, _)| n.clone()).collect();
            variant_key(base, &names, request_headers)
        }
        _ => base.to_owned(),
    };
    if let Err(error) = config.cache.delete(&key).await {
        warn!(key, %error, "could not drop a response a no-cache request refreshes");
    }
}

/// Whether the request carries credentials: its response may be personal.
fn is_private(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

fn asks_no_cache(headers: &HeaderMap) -> bool {
    cache_control_has(headers, &["no-cache"])
        || headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        })
}

/// Whether a `Cache-Control` directive in `headers` is one of `directives` (with or without
/// an argument, such as `private="Set-Cookie"`).
fn cache_control_has(headers: &HeaderMap, directives: &[&str]) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value.split(',').any(|directive| {
                let name = directive.split('=').next().unwrap_or("").trim();
                directives.iter().any(|d| name.eq_ignore_ascii_case(d))
            })
        })
    })
}

/// The request headers a response's `Vary` names, lowercase, sorted, each once.
fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A request header's values as one text (repeated headers joined by commas); `None` if
/// absent. Bytes that are not visible ASCII are kept, escaped.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().escape_ascii().to_string())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn vary_matches(stored: &Stored, request_headers: &HeaderMap) -> bool {
    stored
        .vary
        .iter()
        .all(|(name, value)| header_text(request_headers, name) == *value)
}

/// `<prefix>:<user>:<path and query>`; `-` for a shared entry, and the user's key escaped
/// so that no user key can look like another's.
fn base_key(prefix: &str, user: Option<&str>, parts: &Parts) -> String {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match user {
        None => format!("{prefix}:-:{target}"),
        Some(user) => format!("{prefix}:u{}:{user}:{target}", user.len()),
    }
}

/// The key of one variant: the base key, then each `Vary` header's value (length-prefixed,
/// so that no value can pass for another split).
fn variant_key(base: &str, names: &[String], request_headers: &HeaderMap) -> String {
    let mut key = format!("{base}#vary");
    for name in names {
        match header_text(request_headers, name) {
            Some(value) => key.push_str(&format!(";{name}={}:{value}", value.len())),
            None => key.push_str(&format!(";{name}!")),
        }
    }
    key
}

/// A response the handler made that is not stored: as it is, without its body for a `HEAD`
/// (the handler ran as for a `GET`).
fn uncached(response: Response<Body>, head: bool) -> Response<Body> {
    let response = if head {
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Body::empty())
    } else {
        response
    };
    labelled(response, "MISS")
}

fn labelled(mut response: Response<Body>, label: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(label));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_tell_users_paths_and_variants_apart() {
        let shared = base_key("http", None, &parts("/a?x=1", &[]));
        assert_eq!(shared, "http:-:/a?x=1");
        assert_ne!(shared, base_key("http", None, &parts("/a?x=2", &[])));
        let alice = base_key("http", Some("alice"), &parts("/a", &[]));
        // A user key with separators cannot pass for another user and path.
        assert_ne!(
            base_key("http", Some("a:/b"), &parts("/c", &[])),
            base_key("http", Some("a"), &parts("/b:/c", &[]))
        );
        assert_ne!(alice, base_key("http", None, &parts("/a", &[])));
        let names = vec!["accept-language".to_owned()];
        let en = parts("/a", &[("accept-language", "en")]);
        let fr = parts("/a", &[("accept-language", "fr")]);
        let none = parts("/a", &[]);
        let keys: Vec<String> = [&en, &fr, &none]
            .iter()
            .map(|p| variant_key(&shared, &names, &p.headers))
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_ne!(keys[1], keys[2]);
    }

    #[test]
    fn cache_control_directives_are_read_whole() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, Private"),
        );
        assert!(cache_control_has(&headers, &["private"]));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store-please"),
        );
        assert!(!cache_control_has(&headers, &["no-store"]));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private=\"x\""),
        );
        assert!(cache_control_has(&headers, &["private"]));
    }
}

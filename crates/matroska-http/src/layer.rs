//! The tower layer and its service: which requests are served from the cache, which
//! responses are stored, and how.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use matroska_cache::entry::Lifetime;
use matroska_cache::{set_lifetime, with_dependencies, Dep, MatroskaCache};
use tower::{Layer, Service};
use tracing::{debug, trace, warn};

use crate::request::{self, header_digest, request_key, variant_key, RequestKey, Rules};
use crate::stored::{matches, Stored, X_CACHE};
use crate::surrogate::SurrogateKeys;

/// What a request's `Cache-Control: no-cache` (or `Pragma: no-cache`) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestNoCache {
    /// The handler runs again and its response replaces the cached one, whoever asks: any
    /// client can then make the handler run (and replace a page) at will. Prefer
    /// [`CacheLayer::refresh_if`], which honours it only for requests you trust.
    Refresh,
    /// The cached response is served (the default, as CDNs do): entries are dropped when
    /// what they were built from changes, so they are never stale, and a client cannot make
    /// the handler run.
    #[default]
    Ignore,
}

/// How a request that carries credentials is keyed: the user's identity, or `None` to
/// bypass the cache.
#[derive(Clone)]
enum Identity {
    Now(FromParts),
    Later(Arc<dyn Fn(&Parts) -> Later + Send + Sync>),
}

/// A text found in a request (an identity, a part of the key), or `None`.
type FromParts = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type Later = BoxFuture<'static, Option<String>>;

impl Identity {
    async fn of(&self, parts: &Parts) -> Option<String> {
        match self {
            Identity::Now(identity) => identity(parts),
            Identity::Later(identity) => identity(parts).await,
        }
    }
}

type Predicate = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// The variants of each URL this process stored lately: at most `max` per URL. Variant
/// keys are remembered by a 64-bit hash (a collision only counts two variants as one), in a
/// table of at most 10,000 URLs.
#[derive(Clone)]
struct Variants {
    max: usize,
    seen: moka::sync::Cache<String, Arc<Mutex<Vec<u64>>>>,
}

impl Variants {
    fn new(max: usize, ttl: Duration) -> Variants {
        Variants {
            max,
            seen: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// Whether the variant `key` of `base` may be stored: it was, or there is room.
    fn admit(&self, base: &str, key: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        let seen = self.seen.get_with_by_ref(base, Arc::default);
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(&hash) {
            return true;
        }
        // The base entry is a variant too.
        if seen.len() + 1 >= self.max {
            return false;
        }
        seen.push(hash);
        true
    }
}

#[derive(Clone)]
struct Config {
    cache: MatroskaCache,
    ttl: Duration,
    max_body: usize,
    statuses: Vec<StatusCode>,
    no_cache: RequestNoCache,
    refresh_if: Option<Predicate>,
    per_user: Option<Identity>,
    key_with: Option<FromParts>,
    rules: Rules,
    variants: Variants,
    deps: Vec<Dep>,
    surrogate: Option<SurrogateKeys>,
    surrogate_if: Option<Predicate>,
    buffer_streams: bool,
    namespace: String,
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
        let c = &self.config;
        f.debug_struct("CacheLayer")
            .field("ttl", &c.ttl)
            .field("max_body", &c.max_body)
            .field("statuses", &c.statuses)
            .field("no_cache", &c.no_cache)
            .field("refresh_if", &c.refresh_if.is_some())
            .field("per_user", &c.per_user.is_some())
            .field("key_with", &c.key_with.is_some())
            .field("rules", &c.rules)
            .field("max_variants", &c.variants.max)
            .field("deps", &c.deps)
            .field("surrogate", &c.surrogate)
            .field("namespace", &c.namespace)
            .finish()
    }
}

/// The body size above which a response passes through uncached, unless set.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How many variants of one URL (values of the headers its `Vary` names) a process stores,
/// unless set.
pub const DEFAULT_MAX_VARIANTS: usize = 16;

impl CacheLayer {
    /// Caches responses in `cache` for at most `ttl` (a TTL the cache refuses, such as zero,
    /// stores nothing: each such response is a cache fault, logged and counted).
    ///
    /// The layer's keys are its own: another layer, built elsewhere in the program or in
    /// another program sharing the cache, never serves this one's pages. The namespace is
    /// where this call is (program, file, line and column), so it changes when that line
    /// moves: each deploy that moves it starts this layer's pages afresh (never wrong, a
    /// cold start). Name it with [`key_prefix`](Self::key_prefix) to keep pages across
    /// such deploys.
    #[track_caller]
    pub fn new(cache: MatroskaCache, ttl: Duration) -> CacheLayer {
        let here = std::panic::Location::caller();
        let program = std::env::current_exe()
            .ok()
            .and_then(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let place = format!(
            "{program}\n{}\n{}\n{}",
            here.file(),
            here.line(),
            here.column()
        );
        CacheLayer {
            config: Arc::new(Config {
                cache,
                ttl,
                max_body: DEFAULT_MAX_BODY,
                statuses: vec![StatusCode::OK],
                no_cache: RequestNoCache::default(),
                refresh_if: None,
                per_user: None,
                key_with: None,
                rules: Rules::default(),
                variants: Variants::new(DEFAULT_MAX_VARIANTS, ttl),
                deps: Vec::new(),
                surrogate: None,
                surrogate_if: None,
                buffer_streams: false,
                namespace: format!("@{}", &request::digest(place.as_bytes())[..16]),
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

    /// What a request's `Cache-Control: no-cache` does for every request (default:
    /// [`RequestNoCache::Ignore`]).
    pub fn request_no_cache(self, no_cache: RequestNoCache) -> CacheLayer {
        self.with(|c| c.no_cache = no_cache)
    }

    /// Honours a request's `Cache-Control: no-cache` (the handler runs again and replaces
    /// the entry) when `trusted` says so, such as for requests from an editor's network or
    /// carrying a purge token; others are served from the cache.
    pub fn refresh_if(
        self,
        trusted: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.refresh_if = Some(Arc::new(trusted)))
    }

    /// Caches requests carrying credentials (which bypass the cache without this) under a
    /// per-user key: `identity` returns the user's identity, or `None` to bypass.
    ///
    /// **It runs on every request, and on a hit it is the only check that runs**: the
    /// handler does not. So it must authenticate and authorize completely: verify the token's
    /// signature, and check revocation, disabled accounts and roles here, not in the handler
    /// (or return `None` for requests it cannot decide, which then bypass). An identity it
    /// returns for an unverified token lets anyone read that user's cached pages. For checks
    /// that need I/O (a session store), use [`per_user_async`](Self::per_user_async).
    /// Identities are digested before they reach a key.
    pub fn per_user(
        self,
        identity: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.per_user = Some(Identity::Now(Arc::new(identity))))
    }

    /// [`per_user`](Self::per_user) with an identity that needs I/O: a session looked up in
    /// a store on every request, hits included, so that a revoked session is refused at
    /// once. Return a future that owns what it needs (clone from `parts`).
    pub fn per_user_async(
        self,
        identity: impl Fn(&Parts) -> BoxFuture<'static, Option<String>> + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.per_user = Some(Identity::Later(Arc::new(identity))))
    }

    /// Adds what `key` returns to every request's key: a tenant, a client region, anything
    /// a handler reads that is not in the URL, scheme, host or keyed headers (a request
    /// extension, the client address). `None` bypasses the cache for that request.
    ///
    /// ```
    /// # use matroska_cache::MatroskaCache;
    /// # use matroska_http::CacheLayer;
    /// # use std::time::Duration;
    /// # #[derive(Clone)] struct Tenant(String);
    /// # let cache = MatroskaCache::in_memory();
    /// // An auth layer outside the cache layer put the tenant in the request's extensions.
    /// let layer = CacheLayer::new(cache, Duration::from_secs(60))
    ///     .key_with(|parts| parts.extensions.get::<Tenant>().map(|t| t.0.clone()));
    /// ```
    pub fn key_with(
        self,
        key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.key_with = Some(Arc::new(key)))
    }

    /// The request headers that carry credentials (default:
    /// [`DEFAULT_CREDENTIAL_HEADERS`](crate::DEFAULT_CREDENTIAL_HEADERS)): a request with one
    /// of them bypasses the cache unless [`per_user`](Self::per_user) keys it. Replaces the
    /// list; extend the default to keep it.
    pub fn credential_headers(self, names: impl IntoIterator<Item = HeaderName>) -> CacheLayer {
        self.with(|c| c.rules.credentials = names.into_iter().collect())
    }

    /// Request headers whose values become part of the key (a digest of them), such as
    /// `x-forwarded-proto` or `x-forwarded-host` from a proxy you trust; a request carrying
    /// one of them then no longer bypasses for it.
    pub fn key_headers(self, names: impl IntoIterator<Item = HeaderName>) -> CacheLayer {
        self.with(|c| {
            c.rules.keyed.extend(names);
            c.rules.keyed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            c.rules.keyed.dedup();
        })
    }

    /// Request headers that the handlers behind this layer never read, such as the
    /// `x-forwarded-for` and `x-real-ip` every request through a reverse proxy carries: they
    /// no longer make a request bypass. Naming a header here that a handler reads shares
    /// one client's response with every other.
    pub fn ignore_headers(self, names: impl IntoIterator<Item = HeaderName>) -> CacheLayer {
        self.with(|c| c.rules.ignored.extend(names))
    }

    /// More request headers that make a request bypass unless keyed or ignored (beyond
    /// [`DEFAULT_UNKEYED_HEADERS`](crate::DEFAULT_UNKEYED_HEADERS) and every
    /// `x-forwarded-*`): headers a middleware inside the layer acts on.
    pub fn unkeyed_headers(self, names: impl IntoIterator<Item = HeaderName>) -> CacheLayer {
        self.with(|c| c.rules.unkeyed.extend(names))
    }

    /// The request headers a response's `Vary` may name and still be stored (default:
    /// [`DEFAULT_VARY_ALLOWED`](crate::DEFAULT_VARY_ALLOWED)); a response varying on any
    /// other passes through uncached. Replaces the list.
    pub fn vary_allowed(self, names: impl IntoIterator<Item = HeaderName>) -> CacheLayer {
        self.with(|c| c.rules.vary_allowed = names.into_iter().collect())
    }

    /// How many variants of one URL this process stores (default
    /// [`DEFAULT_MAX_VARIANTS`]); requests for more pass through uncached (`BYPASS`).
    pub fn max_variants(self, variants: usize) -> CacheLayer {
        self.with(|c| c.variants = Variants::new(variants, c.ttl))
    }

    /// Adds `deps` to every response this layer stores (per-route tags).
    pub fn depends_on(self, deps: impl IntoIterator<Item = Dep>) -> CacheLayer {
        self.with(|c| c.deps.extend(deps))
    }

    /// Writes a surrogate-key header for a CDN on every cached shared response (never on a
    /// per-user one). The header names the dependencies (`id:user:42`): CDNs strip it at the
    /// edge, but a client reaching the origin directly sees it, unless
    /// [`surrogate_keys_if`](Self::surrogate_keys_if) limits it to the CDN's requests.
    pub fn surrogate_keys(self, keys: SurrogateKeys) -> CacheLayer {
        self.with(|c| c.surrogate = Some(keys))
    }

    /// Writes the surrogate-key header only on responses to requests `from_cdn` accepts,
    /// such as those carrying a secret header the CDN adds on its way to the origin.
    pub fn surrogate_keys_if(
        self,
        from_cdn: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> CacheLayer {
        self.with(|c| c.surrogate_if = Some(Arc::new(from_cdn)))
    }

    /// Also stores responses whose body has no known length (`Body::from_stream`), reading
    /// them whole (up to [`max_body`](Self::max_body)) before the client gets a byte. Off by
    /// default: such a body passes through as it comes, so a stream (a progress feed, NDJSON)
    /// reaches the client at once.
    pub fn buffer_streams(self, buffer: bool) -> CacheLayer {
        self.with(|c| c.buffer_streams = buffer)
    }

    /// Names this layer's part of the cache (default: where [`new`](Self::new) was called).
    /// Layers with different prefixes never serve each other's pages; give two layers the
    /// same prefix only when they serve the same pages (two processes of one service).
    pub fn key_prefix(self, prefix: &str) -> CacheLayer {
        self.with(|c| c.namespace = prefix.to_owned())
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
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        return inner.call(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let key = match key_of(&config, &parts, body.is_end_stream()).await {
        Ok(key) => key,
        Err(reason) => {
            debug!(reason, "request bypasses the cache");
            let response = inner.call(Request::from_parts(parts, body)).await?;
            return Ok(labelled(response, "BYPASS"));
        }
    };
    let base = key.key.as_str();
    let conditional = parts.headers.get(header::IF_NONE_MATCH).cloned();
    let surrogate = config
        .surrogate_if
        .as_ref()
        .is_none_or(|from_cdn| from_cdn(&parts));
    if refreshes(&config, &parts) {
        drop_entry(&config, base, &parts.headers).await;
    }
    // The handler sees a GET: a HEAD is served from the GET's entry.
    parts.method = Method::GET;
    let runs = Runs::new(parts, &inner, &config, &key);

    let outcome = read_through(&config, base, runs.computation(None)).await;
    let stored = match outcome {
        Ok(stored) => stored,
        Err(Uncached::Response(response)) => return Ok(uncached(response, head)),
        Err(Uncached::Failed(error)) => return Err(error),
    };
    if stored.locator != key.locator {
        // Two URLs with one digest: out of reach for SHA-256, refused all the same.
        warn!("a cached response was stored for another URL with the same digest");
        return pass(&mut inner, runs.request(body), head).await;
    }
    // Another variant of the URL has its own entry. Only a hit can be another variant: a
    // response computed for this request has its values.
    let headers = runs.headers();
    let variant = match runs.outcome() {
        Ran::Not if !stored.vary.is_empty() && !vary_matches(&stored, headers) => {
            let names: Vec<String> = stored.vary.iter().map(|(name, _)| name.clone()).collect();
            let variant = variant_key(base, &names, headers);
            Some((names, variant))
        }
        _ => None,
    };
    if let Some((_, variant)) = &variant {
        if !config.variants.admit(base, variant) {
            debug!("too many variants of one URL; this one bypasses the cache");
            let response = pass(&mut inner, runs.request(body), head).await?;
            return Ok(labelled(response, "BYPASS"));
        }
    }
    let (entry, stored) = match variant {
        None => (key.key.clone(), stored),
        Some((names, variant)) => {
            let outcome = read_through(&config, &variant, runs.computation(Some(names))).await;
            match outcome {
                Ok(stored) => (variant, stored),
                Err(Uncached::Response(response)) => return Ok(uncached(response, head)),
                Err(Uncached::Failed(error)) => return Err(error),
            }
        }
    };
    let label = match runs.outcome() {
        Ran::Not => "HIT",
        Ran::Stored => "MISS",
        // The handler failed and `stale-if-error` served the expired response.
        Ran::Failed => "STALE",
    };
    let answer = match &conditional {
        Some(tags) if matches(tags, &stored.etag) => stored.not_modified(),
        _ => stored.response(!head),
    };
    let Some(mut response) = answer else {
        // A damaged entry (written by another version, say): drop it and let the next
        // request compute.
        warn!("a cached response does not decode; dropping it");
        trace!(key = entry, "the damaged response");
        let _ = config.cache.delete(&entry).await;
        return pass(&mut inner, runs.request(body), head).await;
    };
    if let Some(keys) = config
        .surrogate
        .as_ref()
        .filter(|_| key.shared && surrogate)
    {
        if let Some((name, value)) = keys.header_of_texts(stored.deps.iter().map(String::as_str)) {
            response.headers_mut().insert(name, value);
        }
    }
    trace!(key = entry, label, "response served");
    Ok(labelled(response, label))
}

/// The request's key, or why it may not share the cache: a body, an unkeyed header,
/// credentials without a user, a refusal of `key_with`, a host that is not one.
async fn key_of(config: &Config, parts: &Parts, body_ends: bool) -> Result<RequestKey, String> {
    if let Some(reason) = config.rules.unkeyed_input(&parts.headers, body_ends) {
        return Err(reason);
    }
    let user = if config.rules.is_private(&parts.headers) {
        let Some(identity) = &config.per_user else {
            return Err("credentials".to_owned());
        };
        match identity.of(parts).await {
            Some(user) => Some(user),
            None => return Err("credentials without a user".to_owned()),
        }
    } else {
        None
    };
    let extra = match &config.key_with {
        Some(key_with) => match key_with(parts) {
            Some(extra) => Some(extra),
            None => return Err("key_with".to_owned()),
        },
        None => None,
    };
    request_key(
        &config.namespace,
        user.as_deref(),
        parts,
        &config.rules,
        extra.as_deref(),
    )
}

/// Whether the request's `no-cache` makes the handler run again.
fn refreshes(config: &Config, parts: &Parts) -> bool {
    if !asks_no_cache(&parts.headers) {
        return false;
    }
    config.no_cache == RequestNoCache::Refresh
        || config
            .refresh_if
            .as_ref()
            .is_some_and(|trusted| trusted(parts))
}

/// The handler's response to `request`, uncached.
async fn pass<S>(
    inner: &mut S,
    request: Request<Body>,
    head: bool,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let response = inner.call(request).await?;
    Ok(uncached(response, head))
}

/// Runs the handler for the request in `pending` (taken, so it runs once) and makes its
/// response storable, or says why it is not. `variant_of`: the `Vary` names the base entry
/// was stored under (a variant must have the same ones).
/// Read-through of one entry of the layer: refresh-ahead and fail-safe as the handler's
/// `Cache-Control` asks (`stale-while-revalidate`, `stale-if-error`; see [`lifetime_of`]).
/// Only a handler's error or a 5xx response falls back to an expired response.
async fn read_through<F, Fut, E>(
    config: &Config,
    key: &str,
    computation: F,
) -> Result<Stored, Uncached<E>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(Stored, Vec<Dep>), Uncached<E>>> + Send + 'static,
    E: Send + 'static,
{
    config
        .cache
        .entry(key)
        .ttl(config.ttl)
        // The computation sets the entry's lifetime from the response; this only lets a
        // hit due for a refresh start one (the computation may run in the background).
        .refresh_after(config.ttl)
        .get_or_compute_failing_on(computation, |uncached| match uncached {
            Uncached::Failed(_) => true,
            Uncached::Response(response) => response.status().is_server_error(),
        })
        .await
}

/// Whether the handler ran for this request (not for a background refresh), and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    Not,
    Stored,
    Failed,
}

/// What a computation of the request needs, owned: a background refresh outlives the
/// request. The request's head is shared, and copied only when the handler is called.
struct Runs<S> {
    template: Arc<Parts>,
    inner: S,
    config: Arc<Config>,
    key: RequestKey,
    /// The task serving the request: a computation elsewhere is a background refresh.
    task: Option<tokio::task::Id>,
    ran: Arc<Mutex<Ran>>,
}

impl<S> Runs<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    fn new(parts: Parts, inner: &S, config: &Arc<Config>, key: &RequestKey) -> Self {
        Runs {
            template: Arc::new(parts),
            inner: inner.clone(),
            config: Arc::clone(config),
            key: key.clone(),
            task: tokio::task::try_id(),
            ran: Arc::new(Mutex::new(Ran::Not)),
        }
    }

    fn headers(&self) -> &HeaderMap {
        &self.template.headers
    }

    /// The request as it came (as a GET), with its `body`.
    fn request(&self, body: Body) -> Request<Body> {
        Request::from_parts(Parts::clone(&self.template), body)
    }

    fn outcome(&self) -> Ran {
        *self.ran.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handler on a copy of the request (a GET without a body: requests with one
    /// bypass the cache), for the entry of the URL or of its variant on `variant_of`.
    #[allow(clippy::type_complexity)]
    fn computation(
        &self,
        variant_of: Option<Vec<String>>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<(Stored, Vec<Dep>), Uncached<S::Error>>>
           + Send
           + 'static {
        let template = Arc::clone(&self.template);
        let (mut inner, config) = (self.inner.clone(), Arc::clone(&self.config));
        let (key, task, ran) = (self.key.clone(), self.task, Arc::clone(&self.ran));
        move || {
            Box::pin(async move {
                let request = Request::from_parts(Parts::clone(&template), Body::empty());
                let here = tokio::task::try_id() == task;
                let computed = async {
                    std::future::poll_fn(|cx| inner.poll_ready(cx))
                        .await
                        .map_err(Uncached::Failed)?;
                    compute(&config, &mut inner, request, &key, variant_of.as_deref()).await
                }
                .await;
                if here {
                    *ran.lock().unwrap_or_else(PoisonError::into_inner) = match &computed {
                        Ok(_) => Ran::Stored,
                        Err(_) => Ran::Failed,
                    };
                }
                computed
            })
        }
    }
}

/// How long a response is stored: the layer's TTL, extended by the handler's
/// `stale-while-revalidate=N` (served for N seconds past the TTL while one request
/// recomputes it in the background) and kept `stale-if-error=M` seconds past that as a
/// fallback for a failing handler.
fn lifetime_of(config: &Config, headers: &HeaderMap) -> Lifetime {
    let seconds = |name: &str| {
        directives(headers, header::CACHE_CONTROL.as_str()).find_map(|directive| {
            let (key, value) = directive.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case(name) {
                return None;
            }
            let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
            (secs > 0).then(|| Duration::from_secs(secs))
        })
    };
    let mut lifetime = Lifetime::new(config.ttl);
    if let Some(window) = seconds("stale-while-revalidate") {
        lifetime = Lifetime::new(config.ttl.saturating_add(window)).refresh_after(config.ttl);
    }
    if let Some(window) = seconds("stale-if-error") {
        lifetime = lifetime.fail_safe(window);
    }
    lifetime
}

async fn compute<S>(
    config: &Config,
    inner: &mut S,
    request: Request<Body>,
    key: &RequestKey,
    variant_of: Option<&[String]>,
) -> Result<(Stored, Vec<Dep>), Uncached<S::Error>>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    let request_headers = request.headers().clone();
    let (result, deps) = with_dependencies(inner.call(request)).await;
    let response = result.map_err(Uncached::Failed)?;
    if let Some(reason) = not_storable(config, &response) {
        debug!(reason, "response not stored");
        return Err(Uncached::Response(response));
    }
    let vary = vary_names(response.headers());
    if let Some(name) = vary.iter().find(|name| !config.rules.may_vary_on(name)) {
        debug!(
            vary = name,
            "response varies on a header not allowed; not stored"
        );
        return Err(Uncached::Response(response));
    }
    if variant_of.is_some_and(|names| names != vary) {
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
            let value = header_digest(&request_headers, &name);
            (name, value)
        })
        .collect();
    let mut deps: Vec<Dep> = config.deps.iter().cloned().chain(deps).collect();
    deps.sort_unstable();
    deps.dedup();
    let texts = deps.iter().map(|d| d.as_str().to_owned()).collect();
    set_lifetime(lifetime_of(config, &parts.headers));
    let mut stored = Stored::new(parts.status, &parts.headers, &body, vary, texts);
    stored.locator.clone_from(&key.locator);
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
    // What a handler tells shared caches (CDNs) not to keep, this cache does not keep either.
    let shared_max_age_zero = directives(headers, header::CACHE_CONTROL.as_str())
        .any(|d| d.eq_ignore_ascii_case("s-maxage=0"));
    let surrogate_no_store = ["surrogate-control", "cdn-cache-control"]
        .iter()
        .any(|name| directive_in(headers, name, &["no-store", "private"]));
    if shared_max_age_zero || surrogate_no_store {
        return Some("not for shared caches");
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"))
    {
        return Some("event stream");
    }
    let size = response.body().size_hint();
    if size.lower() > config.max_body as u64 {
        return Some("body size");
    }
    if size.upper().is_none() && !config.buffer_streams {
        return Some("a stream (no known length)");
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
        warn!(%error, "could not drop a response a no-cache request refreshes");
    }
}

fn asks_no_cache(headers: &HeaderMap) -> bool {
    cache_control_has(headers, &["no-cache"])
        || headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
        })
}

/// Whether a `Cache-Control` directive in `headers` is one of `names` (with or without an
/// argument, such as `private="Set-Cookie"`).
fn cache_control_has(headers: &HeaderMap, names: &[&str]) -> bool {
    directive_in(headers, header::CACHE_CONTROL.as_str(), names)
}

/// Whether a directive of the `header` headers is one of `names` (with or without an
/// argument).
fn directive_in(headers: &HeaderMap, header: &str, names: &[&str]) -> bool {
    directives(headers, header).any(|directive| {
        let name = directive.split('=').next().unwrap_or("").trim();
        names.iter().any(|n| name.eq_ignore_ascii_case(n))
    })
}

/// The comma-separated directives of every `header` header, trimmed.
fn directives<'a>(headers: &'a HeaderMap, header: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
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

fn vary_matches(stored: &Stored, request_headers: &HeaderMap) -> bool {
    stored
        .vary
        .iter()
        .all(|(name, digest)| header_digest(request_headers, name) == *digest)
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

//! HTTP response caching for axum and tower with [`matroska_cache`]: a layer that stores what
//! a handler returned, with the dependencies the handler declared while it ran, so that
//! `cache.invalidate(..)` (in any process sharing the cache's Redis) drops every page built
//! from what changed.
//!
//! ```
//! use axum::{extract::Path, routing::get, Router};
//! use matroska_cache::{dep, depends_on, MatroskaCache};
//! use matroska_http::CacheLayer;
//! use std::time::Duration;
//!
//! async fn show_post(Path(id): Path<u64>) -> String {
//!     // Read the post from the database; say what the page is built from.
//!     depends_on([dep::id("post", id)]);
//!     format!("<h1>Post {id}</h1>")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = MatroskaCache::in_memory();
//! let app: Router = Router::new()
//!     .route("/posts/{id}", get(show_post))
//!     .layer(CacheLayer::new(cache.clone(), Duration::from_secs(60)));
//! // After an edit of post 1, its page is computed again on the next request:
//! cache.invalidate([dep::id("post", 1)]).await.unwrap();
//! # let _ = app;
//! # }
//! ```
//!
//! # What is stored
//!
//! - `GET` responses with status 200 (and those [`CacheLayer::also_status`] adds), their
//!   headers minus hop-by-hop ones, and their body. A `HEAD` is answered from the `GET`'s
//!   entry, without the body; on a miss the handler runs as for a `GET`.
//! - **The key** is the layer's namespace, the user ([`CacheLayer::per_user`], as a
//!   digest), the scheme and host, the original path and query (before any `nest` stripped
//!   its prefix), the values of the headers [`CacheLayer::key_headers`] names (as digests)
//!   and what [`CacheLayer::key_with`] returns. A URL longer than 512 bytes is keyed by its
//!   SHA-256, with the full URL kept in the entry and compared on every hit.
//! - A response with `Vary` is stored per value of the request headers it names (as
//!   digests; `Accept-*` lists normalised), if they are all on the allow-list
//!   ([`DEFAULT_VARY_ALLOWED`], [`CacheLayer::vary_allowed`]), at most
//!   [`CacheLayer::max_variants`] per URL in each process; `Vary: *` is not stored.
//! - **Dependencies** are what the handler declared while it ran, through
//!   [`matroska_cache::depends_on`] and every nested `get_or_compute`, plus the layer's own
//!   ([`CacheLayer::depends_on`]). Stale-set fencing, single flight and leases are
//!   `get_or_compute`'s: a response whose dependencies were invalidated while the handler
//!   ran is sent but not stored, and concurrent misses of one URL run the handler once.
//!
//! # What passes through
//!
//! - Other methods, untouched.
//! - Responses with `Set-Cookie`, `Cache-Control: private` or `no-store`, another status,
//!   `text/event-stream` (SSE), trailers, a `Vary` off the allow-list, or a body over
//!   [`CacheLayer::max_body`] (streamed on as it comes, never held whole).
//! - Requests that bypass the cache (`x-cache: BYPASS`, the handler runs, nothing is stored):
//!   those with a credential header ([`DEFAULT_CREDENTIAL_HEADERS`]: `Authorization`,
//!   `Cookie`, `Proxy-Authorization`, `X-Api-Key`, ...) unless [`CacheLayer::per_user`] keys
//!   them; those with a header proxies or middleware act on that the key does not hold
//!   (every `X-Forwarded-*`, `Forwarded`, `X-Original-URL`, method overrides:
//!   [`DEFAULT_UNKEYED_HEADERS`]) unless [`CacheLayer::key_headers`] keys it or
//!   [`CacheLayer::ignore_headers`] says no handler reads it; a `GET` or `HEAD` with a
//!   body; a `Host` that is not a host.
//! - A request's `Cache-Control: no-cache` is ignored ([`RequestNoCache`]), unless
//!   [`CacheLayer::refresh_if`] trusts the request.
//!
//! # What a handler may read
//!
//! A hit is served to every request with the same key, so a handler must read nothing that
//! is not in the key, beyond what its response's `Vary` names: the path and query, its
//! route parameters, the host. Anything else (a header, a request extension an inner layer
//! set, the client address from `ConnectInfo`, the body) must be keyed
//! ([`CacheLayer::key_headers`], [`CacheLayer::key_with`]), or named in `Vary`, or the
//! route must not be behind the layer. Behind a reverse proxy that adds `X-Forwarded-For`
//! and `X-Real-IP` to every request, say which of them the handlers never read
//! ([`CacheLayer::ignore_headers`]) or key the ones they do.
//!
//! # Response headers
//!
//! - `x-cache: HIT` (the handler did not run), `MISS` (it did), `BYPASS`, or `STALE` (the
//!   handler failed and its `stale-if-error` window served the expired page).
//! - A strong `ETag`: the handler's own, or a hash of the response, the same for the same
//!   response. An `If-None-Match` that matches gets a 304, on a hit without running the
//!   handler.
//! - With [`CacheLayer::surrogate_keys`], the dependencies as a CDN's surrogate keys
//!   ([`surrogate`]), and a [`purge::PurgeHook`] receives every invalidation's dependencies
//!   to purge them there. The `purge-clients` feature adds hooks that call Fastly's and
//!   Cloudflare's purge APIs (`purge::clients`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod layer;
pub mod purge;
mod request;
mod stored;
pub mod surrogate;

pub use layer::{CacheLayer, CacheService, RequestNoCache, DEFAULT_MAX_BODY, DEFAULT_MAX_VARIANTS};
pub use request::{DEFAULT_CREDENTIAL_HEADERS, DEFAULT_UNKEYED_HEADERS, DEFAULT_VARY_ALLOWED};
pub use stored::X_CACHE;
pub use surrogate::{Cdn, SurrogateKeys};

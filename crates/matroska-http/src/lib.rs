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
//! - **The key** is the path and query. A response with `Vary` is stored per value of the
//!   request headers it names; `Vary: *` is not stored.
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
//!   `text/event-stream` (SSE), trailers, or a body over [`CacheLayer::max_body`] (streamed
//!   on as it comes, never held whole).
//! - Requests with `Authorization` or `Cookie` bypass the cache (`x-cache: BYPASS`), unless
//!   [`CacheLayer::per_user`] keys them per user.
//! - A request's `Cache-Control: no-cache` runs the handler again and replaces the entry
//!   ([`RequestNoCache`]).
//!
//! # Response headers
//!
//! - `x-cache: HIT` (the handler did not run), `MISS` (it did) or `BYPASS`.
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
mod stored;
pub mod surrogate;

pub use layer::{CacheLayer, CacheService, RequestNoCache, DEFAULT_MAX_BODY};
pub use stored::X_CACHE;
pub use surrogate::{Cdn, SurrogateKeys};

#![doc = include_str!("../../../README.md")]
//!
//! # Layout
//!
//! - [`cache`] holds [`MatroskaCache`], the front door: it encodes values, dedupes
//!   dependencies, counts and logs.
//! - [`dep`] holds [`Dep`] and one file per kind of dependency (`id`, `tag`/`ntag`, `pk`),
//!   with their collision-free text form.
//! - [`codec`] says how values are stored (strings as they are, the rest as JSON).
//! - [`backend`] holds the [`Backend`] trait, [`backend::memory`] (moka plus a dependency
//!   index) and [`backend::redis`] (hashes, with the Lua scripts beside the code that runs
//!   them).
//! - [`collect`] gathers the dependencies of nested values ([`Dependencies`], derivable).
//! - `orm` (feature `sea-orm`) names SeaORM models' dependencies and invalidates after commit.
//! - [`scopes`] gives cached filtered lists their dependencies (declared filters, run on
//!   every write), and [`changes`] lists the fields a write changed.
//! - [`read_through`] adds `get_or_compute`: stale-set fencing, single flight, leases and
//!   nested dependency propagation.
//! - `cached_fn` is what `#[cached]` functions run (`derive` feature): their key
//!   format and their call through `get_or_compute`.
//! - [`stats`] holds the counters, [`error`] the one error type, [`ttl`] the one TTL rule.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
pub mod cache;
mod cached_fn;
pub mod changes;
pub mod codec;
pub mod collect;
pub mod dep;
mod detach;
pub mod entry;
pub mod error;
mod flight;
pub mod key;
mod key_argument;
#[cfg(feature = "sea-orm")]
#[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
pub mod orm;
pub mod read_through;
pub mod recovery;
pub mod scopes;
pub mod stats;
pub mod ttl;

pub use backend::memory::{MemoryBackend, MemoryBackendBuilder};
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBackendBuilder};
pub use backend::{Backend, Fenced, Lease, PruneReport, Ticket};
pub use cache::{InvalidationHook, MatroskaCache, MatroskaCacheBuilder};
pub use collect::{DepSet, Dependencies};
pub use dep::Dep;
pub use entry::Entry;
pub use error::{Error, Result, ServerError};
pub use key::MAX_KEY_LEN;
pub use read_through::{depends_on, set_lifetime, with_dependencies};
pub use stats::Stats;
pub use ttl::MAX_TTL;

/// What the derive macros' expansions name; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::cached_fn::{
        always, call, call_infallible, call_infallible_refreshing, call_refreshing, key,
        key_from_expression, key_or_reason, no_deps, value_deps, KeyArgument, Lifetimes,
    };
    pub use serde;
}

/// Derives [`Dependencies`] (`derive` feature); see the trait for the attributes.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use matroska_cache_derive::Dependencies;

/// Caches an async fn through a [`MatroskaCache`] (`derive` feature): one line gives it
/// [`get_or_compute`](MatroskaCache::get_or_compute), with dependencies declared inside it.
///
/// ```
/// use std::sync::LazyLock;
/// use matroska_cache::{cached, dep, depends_on, MatroskaCache};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # struct Profile { name: String }
/// # #[derive(Debug)]
/// # struct DbError;
/// # async fn load_profile(id: u64) -> Result<Profile, DbError> { Ok(Profile { name: format!("user {id}") }) }
///
/// static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);
///
/// #[cached(cache = CACHE, ttl = "5m")]
/// async fn profile(id: u64) -> Result<Profile, DbError> {
///     depends_on([dep::id("user", id)]);
///     load_profile(id).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DbError> {
/// let first = profile(7).await?; // runs the body, stores the profile
/// let again = profile(7).await?; // from the cache
/// assert_eq!(profile_key(7), "rust_out::profile(7)"); // module path, name, arguments
/// assert_eq!(CACHE.invalidate([dep::id("user", 7)]).await.unwrap(), 1);
/// # Ok(()) }
/// ```
///
/// Methods read the cache from `self`, and `&self` is not part of the key:
///
/// ```
/// # use matroska_cache::{cached, dep, depends_on, MatroskaCache};
/// # #[derive(Debug)] struct DbError;
/// struct Repo {
///     cache: MatroskaCache,
/// }
///
/// impl Repo {
///     #[cached(cache = self.cache, ttl = "60s", version = 2)]
///     async fn title(&self, id: u64, #[skip] trace_id: &str) -> Result<String, DbError> {
///         depends_on([dep::id("article", id)]);
///         Ok(format!("Article {id}"))
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let repo = Repo { cache: MatroskaCache::in_memory() };
/// assert_eq!(repo.title(1, "t-1").await.unwrap(), "Article 1");
/// assert_eq!(repo.title_key(1), "rust_out::Repo::title@v2(1)");
/// assert!(repo.cache.has(&repo.title_key(1)).await.unwrap());
/// # }
/// ```
///
/// # Options
///
/// - `cache = EXPR` (required): any expression that derefs to a [`MatroskaCache`]: a static
///   `LazyLock`, `self.cache`, an `Arc`.
/// - `ttl = "5m"` (required): how long a result is kept, in humantime format (`"90s"`,
///   `"1h 30m"`), checked at compile time: above zero, at most [`MAX_TTL`].
/// - `version = N`: part of the key; raise it when the result's type or meaning changes, so
///   that old entries are not read.
/// - `key = EXPR`: the key after `<module path>::<name>=`, any `Display`
///   (`key = format!("profile:{id}")` gives `app::profile=profile:1`); the parameters then
///   need not be `Serialize`. The prefix keeps two functions (and the HTTP layer) from
///   sharing entries.
/// - `name = "..."`: replaces the module path and function name in the key (no control
///   characters, `(` or `=`).
/// - `cache_none = true`: for a function returning `Option`, stores `None` too.
/// - `deps_from_value`: adds the dependencies found in the result ([`Dependencies`]; for a
///   `Result`, in its `Ok` value) to those the body declared.
/// - `#[skip]` on a parameter leaves it out of the key (a database pool, a trace id).
///
/// # Keys
///
/// `<module path>::<name>[::<type arguments>][@v<version>](<arguments>)`, where each
/// argument is its serde JSON with map keys sorted: `app::profile(42)`,
/// `app::load::<u32>({"a":1})`. So keys are the same across processes, builds and platforms
/// (`std::hash` is not). For a method, the implementing type's path replaces the module
/// path (`app::Repo::title@v2(1)`), so two types' `by_id` never share entries; generic
/// functions add their type arguments. Those type paths come from [`std::any::type_name`],
/// which the standard library does not promise to keep across compiler versions: pin such a
/// key with `name = "..."` or `key = ...` where that matters. Arguments whose order is
/// arbitrary (a `HashSet`) make arbitrary keys: use ordered collections. An argument whose
/// `Serialize` fails at run time (a map with non-string keys), or whose JSON would lose what
/// tells it apart (a NaN or infinite float, written `null` like `None`; `Some(None)`), makes
/// the call run without the cache, counted as a fault. A key longer than
/// [`MAX_KEY_LEN`] stores under a SHA-256 digest of its arguments.
///
/// **The key is the arguments' serialized form.** Fields that `Serialize` leaves out
/// (`#[serde(skip)]`, a hand-written impl) are not in it: calls that differ only there share
/// one entry. Never let a credential stand for a user in a key:
///
/// ```
/// # use matroska_cache::{cached, MatroskaCache};
/// # use std::sync::LazyLock;
/// # static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);
/// #[derive(serde::Serialize)]
/// struct Session {
///     user_id: u64,
///     #[serde(skip)]
///     token: String,
/// }
///
/// // Wrong: `token` is not in the key, so a forged token reads user 7's inbox once the
/// // real user has. Verify the session first and pass the user id instead:
/// #[cached(cache = CACHE, ttl = "1m")]
/// async fn inbox(session: Session) -> String {
///     format!("inbox of user {}", session.user_id)
/// }
///
/// let real = Session { user_id: 7, token: "real".into() };
/// let forged = Session { user_id: 7, token: "forged".into() };
/// assert_eq!(inbox_key(real), inbox_key(forged));
/// ```
///
/// # What is stored
///
/// Chosen by the written return type's last segment:
///
/// - `Result<T, E>` (also `io::Result<T>`): `Ok` values are stored; errors reach the caller
///   unchanged and are never stored.
/// - `Option<T>`: `Some` values are stored, and `None` with `cache_none = true`.
/// - Anything else is always stored. (A type alias of a `Result` under another name counts
///   as a plain value, so its errors would be stored: write `Result<..>`.)
///
/// Whatever is not stored still adds what the body declared to an enclosing computation.
///
/// # How it runs
///
/// Every call goes through [`get_or_compute`](MatroskaCache::get_or_compute): single flight
/// (per key, not one global lock), stale-set fencing, leases, and Russian dolls: a cached
/// function called inside another's computation adds its dependencies to the outer entry.
/// The function's future is `Send` whenever its body's is. Cache faults never fail the call.
///
/// # Companions
///
/// The attribute also writes, with the function's visibility:
///
/// - `<name>_uncached(..)`: the body as written, without the cache;
/// - `<name>_key(..) -> String`: the key for these arguments (without the `#[skip]`ped
///   ones; a method's takes `&self`), to inspect or delete an entry with the `matroska` CLI.
///
/// It cannot be used in a trait implementation (the companions are not the trait's).
/// Mistakes are compile errors at the attribute or the parameter: a bad ttl, a function that
/// is not `async`, a parameter that is not `Serialize` and not `#[skip]`, a missing `cache`.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use matroska_cache_derive::cached;

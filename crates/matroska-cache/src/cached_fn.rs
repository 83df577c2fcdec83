//! What [`#[cached]`](crate::cached) functions run: their keys and their read-through call.
//!
//! The attribute (the `derive` feature) writes three functions; everything they share lives
//! here, so the expansion stays a few lines and the key format is written once.
//!
//! # The key format
//!
//! `<owner>::<name>[::<type arguments>][@v<version>](<arguments>)`, for example
//! `app::profile(42)`, `app::repo::Repo::by_id@v2(7,"en")` or
//! `app::load::<u32>({"a":1,"b":[2,3]})`:
//!
//! - `owner` is the function's module path; for a method (a function with a `self`
//!   receiver) it is the implementing type's path instead, so that two types of one module
//!   can both have a cached `by_id`. `name = "..."` replaces `<owner>::<name>`.
//! - Generic functions add the names of their type arguments, so `load::<u32>` and
//!   `load::<u64>` never share an entry.
//! - Each argument (not the receiver, not those marked `#[skip]`) is its serde JSON, with the
//!   keys of every map sorted: the same across processes, builds and platforms, unlike
//!   `std::hash`. An argument whose JSON would lose what tells it apart (a NaN or infinite
//!   float, which JSON writes as `null` like `None`; `Some(None)`) makes the call run
//!   without the cache, counted as a fault.
//! - `key = EXPR` gives `<owner>::<name>=<the expression's text>`.
//! - A key longer than [`MAX_KEY_LEN`] keeps its part before the arguments (or the `=`) and
//!   puts `(#sha256=<hex>)`, the SHA-256 of the whole key, in place of the rest.
//!
//! The key is the arguments' *serialized* form: fields a `Serialize` implementation leaves
//! out (`#[serde(skip)]`, a hand-written impl) are not in it, so two calls that differ only
//! there share an entry. Never pass a credential (a token, a session) as an argument to stand
//! for a user: pass the verified user id, and `#[skip]` the credential.
//!
//! Type paths come from [`std::any::type_name`], which the standard library does not promise
//! to keep the same across compiler versions (it has not changed in years). Pin a method's or
//! generic function's key with `name = "..."` (and no type parameters), or `key = ...`, when
//! it must survive any compiler upgrade.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use crate::cache::MatroskaCache;
use crate::codec::canonical_json;
use crate::collect::Dependencies;
use crate::dep::Dep;
use crate::entry::Entry;
use crate::error::Error;
use crate::key::MAX_KEY_LEN;
use crate::key_argument;
use crate::stats::Counter;

/// A parameter of a `#[cached]` function that is part of its key: anything `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "this parameter is part of the key of the #[cached] function",
    note = "mark the parameter `#[skip]` to leave it out of the key, or give the function `key = ...`"
)]
pub trait KeyArgument {
    /// The argument as JSON; an error where JSON would lose what tells it apart from
    /// another value (a NaN, `Some(None)`).
    fn to_json(&self) -> serde_json::Result<serde_json::Value>;
}

impl<T: Serialize + ?Sized> KeyArgument for T {
    fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        let json = serde_json::to_value(self)?;
        // Only a `null` can stand for two values.
        if holds_null(&json) {
            key_argument::check(self).map_err(serde::ser::Error::custom)?;
        }
        Ok(json)
    }
}

fn holds_null(json: &serde_json::Value) -> bool {
    use serde_json::Value;
    match json {
        Value::Null => true,
        Value::Array(items) => items.iter().any(holds_null),
        Value::Object(fields) => fields.values().any(holds_null),
        _ => false,
    }
}

/// The key of a call: `owner::name` (or `name` alone when `owner` is empty, for
/// `name = "..."`), type arguments, version and arguments, in the module's format.
///
/// It fails only when an argument's `Serialize` implementation does (a map with non-string
/// keys, say).
pub fn key(
    owner: &str,
    name: &str,
    type_arguments: &[&str],
    version: Option<u32>,
    arguments: &[&dyn KeyArgument],
) -> Result<String, Error> {
    let mut key = String::with_capacity(owner.len() + name.len() + 2 + 16 * arguments.len());
    if !owner.is_empty() {
        key.push_str(owner);
        key.push_str("::");
    }
    key.push_str(name);
    if !type_arguments.is_empty() {
        key.push_str("::<");
        key.push_str(&type_arguments.join(","));
        key.push('>');
    }
    if let Some(version) = version {
        // Writing to a String cannot fail.
        let _ = write!(key, "@v{version}");
    }
    let function = key.len();
    key.push('(');
    for (i, argument) in arguments.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let encode_error = |source| Error::Encode {
            key: key.clone(),
            source,
        };
        let json = argument.to_json().map_err(encode_error)?;
        let text = serde_json::to_string(&canonical_json(&json)).map_err(encode_error)?;
        key.push_str(&text);
    }
    key.push(')');
    Ok(bounded(key, function))
}

/// `key` itself if a write accepts it, else the part before `at` followed by `(#sha256=`,
/// the SHA-256 of the whole key in hex and `)`.
///
/// A SHA-256 collision is out of reach (2^128 work), so the digest stands for the key.
fn bounded(key: String, at: usize) -> String {
    use sha2::Digest as _;
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut short = String::with_capacity(at + 80);
    short.push_str(&key[..at]);
    short.push_str("(#sha256=");
    for byte in digest {
        let _ = write!(short, "{byte:02x}");
    }
    short.push(')');
    short
}

/// The `<name>_key` companion's answer: the key, or, for arguments that cannot be encoded
/// (the function then runs without the cache), a text saying so that names no entry.
pub fn key_or_reason(key: Result<String, Error>) -> String {
    key.unwrap_or_else(|error| format!("<no key: {error}>"))
}

/// The `key = ...` override: `<owner>::<name>=` and the expression's text, so that no two
/// functions (and no HTTP layer) share a key; a SHA-256 digest stands for a long text.
pub fn key_from_expression(
    owner: &str,
    name: &str,
    key: impl std::fmt::Display,
) -> Result<String, Error> {
    let text = format!("{owner}::{name}={key}");
    let function = owner.len() + 2 + name.len();
    Ok(bounded(text, function))
}

/// The entry options a `#[cached]` attribute gives: `ttl`, and `fail_safe` if set.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// How long a result is fresh.
    pub ttl: Duration,
    /// How long past its TTL it stays as a fail-safe fallback.
    pub fail_safe: Option<Duration>,
}

/// Why a `#[cached]` computation stored nothing.
pub enum Unstored<T, E> {
    /// The function failed: a fail-safe fallback may stand in.
    Failed(E),
    /// The function's value is not to be stored (`None` without `cache_none`).
    Kept(T),
}

fn failed<T, E>(unstored: &Unstored<T, E>) -> bool {
    matches!(unstored, Unstored::Failed(_))
}

impl Lifetimes {
    fn entry<'c>(&self, cache: &'c MatroskaCache, key: &'c str) -> Entry<'c> {
        let entry = cache.entry(key).ttl(self.ttl);
        match self.fail_safe {
            Some(window) => entry.fail_safe(window),
            None => entry,
        }
    }
}

/// The key, or `None` (counted as a fault and logged) if it could not be made: the function
/// then runs without the cache.
fn usable_key(cache: &MatroskaCache, key: Result<String, Error>) -> Option<String> {
    match key {
        Ok(key) => Some(key),
        Err(error) => {
            cache.inner.counters.add(Counter::Faults, 1);
            warn!(%error, "a #[cached] function's key cannot be made; running it without the cache");
            None
        }
    }
}

/// The function's body as a read-through computation: `Ok` with the value and its
/// dependencies when `keep` says so, else why not.
macro_rules! computation {
    ($run:ident, $deps:ident, $keep:ident) => {
        move || async move {
            match $run().await {
                Ok(value) if $keep(&value) => {
                    let deps = $deps(&value);
                    Ok((value, deps))
                }
                Ok(value) => Err(Unstored::Kept(value)),
                Err(error) => Err(Unstored::Failed(error)),
            }
        }
    };
}

fn finish<T, E>(computed: Result<T, Unstored<T, E>>) -> Result<T, E> {
    match computed {
        Ok(value) | Err(Unstored::Kept(value)) => Ok(value),
        Err(Unstored::Failed(error)) => Err(error),
    }
}

/// A `#[cached]` call: read-through under `key` with `lifetimes`, storing the function's
/// result when `keep` says so, with the dependencies the body declared plus those `deps`
/// finds in the value. An error of the function is returned unchanged (or, with fail-safe,
/// the expired value), and never stored. If the key could not be made, the function runs
/// without the cache (counted as a fault).
pub async fn call<T, E, F, Fut, D, K>(
    cache: &MatroskaCache,
    key: Result<String, Error>,
    lifetimes: Lifetimes,
    run: F,
    deps: D,
    keep: K,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send,
    E: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
    D: FnOnce(&T) -> Vec<Dep> + Send,
    K: FnOnce(&T) -> bool + Send,
{
    let Some(key) = usable_key(cache, key) else {
        return run().await;
    };
    let entry = lifetimes.entry(cache, &key);
    finish(
        entry
            .get_or_compute_failing_on(computation!(run, deps, keep), failed)
            .await,
    )
}

/// [`call`] with refresh-ahead after `refresh_after`: the body may run in a background
/// task, so everything it holds is `'static`.
#[allow(clippy::too_many_arguments)]
pub async fn call_refreshing<T, E, F, Fut, D, K>(
    cache: &MatroskaCache,
    key: Result<String, Error>,
    lifetimes: Lifetimes,
    refresh_after: Duration,
    run: F,
    deps: D,
    keep: K,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    D: FnOnce(&T) -> Vec<Dep> + Send + 'static,
    K: FnOnce(&T) -> bool + Send + 'static,
{
    let Some(key) = usable_key(cache, key) else {
        return run().await;
    };
    let entry = lifetimes.entry(cache, &key).refresh_after(refresh_after);
    finish(
        entry
            .get_or_compute_failing_on(computation!(run, deps, keep), failed)
            .await,
    )
}

/// [`call`] for a function that cannot fail (it returns an `Option` or a plain value).
pub async fn call_infallible<T, F, Fut, D, K>(
    cache: &MatroskaCache,
    key: Result<String, Error>,
    lifetimes: Lifetimes,
    run: F,
    deps: D,
    keep: K,
) -> T
where
    T: Serialize + DeserializeOwned + Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T> + Send,
    D: FnOnce(&T) -> Vec<Dep> + Send,
    K: FnOnce(&T) -> bool + Send,
{
    let run = move || async move { Ok::<T, Infallible>(run().await) };
    match call(cache, key, lifetimes, run, deps, keep).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// [`call_refreshing`] for a function that cannot fail.
#[allow(clippy::too_many_arguments)]
pub async fn call_infallible_refreshing<T, F, Fut, D, K>(
    cache: &MatroskaCache,
    key: Result<String, Error>,
    lifetimes: Lifetimes,
    refresh_after: Duration,
    run: F,
    deps: D,
    keep: K,
) -> T
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    D: FnOnce(&T) -> Vec<Dep> + Send + 'static,
    K: FnOnce(&T) -> bool + Send + 'static,
{
    let run = move || async move { Ok::<T, Infallible>(run().await) };
    match call_refreshing(cache, key, lifetimes, refresh_after, run, deps, keep).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// No dependencies beyond what the body declared.
pub fn no_deps<T>(_: &T) -> Vec<Dep> {
    Vec::new()
}

/// `deps_from_value`: the dependencies found in the value.
pub fn value_deps<T: Dependencies>(value: &T) -> Vec<Dep> {
    value.dependencies()
}

/// Every value is stored.
pub fn always<T>(_: &T) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn the_format() {
        let key = |owner, types: &[&str], version, args: &[&dyn KeyArgument]| {
            super::key(owner, "f", types, version, args).unwrap()
        };
        assert_eq!(key("app", &[], None, &[]), "app::f()");
        assert_eq!(key("app::m", &[], None, &[&42u64]), "app::m::f(42)");
        assert_eq!(
            key(
                "app",
                &["u32", "alloc::string::String"],
                Some(3),
                &[&"x", &Some(1.5)]
            ),
            "app::f::<u32,alloc::string::String>@v3(\"x\",1.5)"
        );
        assert_eq!(key("", &[], None, &[&()]), "f(null)");
    }

    #[test]
    fn an_unencodable_argument_is_an_error() {
        let map: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let error = super::key("app", "f", &[], None, &[&1u8, &map]).unwrap_err();
        assert!(matches!(error, Error::Encode { .. }), "{error}");
        assert!(key_or_reason(Err(error)).starts_with("<no key: "));
    }

    proptest! {
        /// Maps give one key whatever order they were filled in.
        #[test]
        fn maps_are_canonical(entries in proptest::collection::vec(("[a-z]{0,4}", any::<i64>()), 0..12)) {
            let forward: HashMap<String, i64> = entries.iter().cloned().collect();
            let sorted: BTreeMap<String, i64> = forward.clone().into_iter().collect();
            let mut reversed = serde_json::Map::new();
            for (k, v) in sorted.iter().rev() {
                reversed.insert(k.clone(), (*v).into());
            }
            let a = super::key("m", "f", &[], None, &[&forward]).unwrap();
            let b = super::key("m", "f", &[], None, &[&sorted]).unwrap();
            let c = super::key("m", "f", &[], None, &[&reversed]).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
        }

        /// Different arguments give different keys: each argument is a JSON value, and JSON
        /// values are comma-separated without ambiguity.
        #[test]
        fn distinct_arguments_distinct_keys(
            a in proptest::collection::vec(any::<String>(), 0..4),
            b in proptest::collection::vec(any::<String>(), 0..4),
        ) {
            let args = |v: &Vec<String>| -> String {
                let refs: Vec<&dyn KeyArgument> = v.iter().map(|s| s as &dyn KeyArgument).collect();
                super::key("m", "f", &[], None, &refs).unwrap()
            };
            prop_assert_eq!(a == b, args(&a) == args(&b));
        }
    }
}

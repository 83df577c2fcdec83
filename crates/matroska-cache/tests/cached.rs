//! `#[cached]`: what is stored, the key format, companions, Russian dolls and single flight,
//! on both backends. (Misuse as compile errors: `tests/ui/cached_*.rs`, run by `derive.rs`.)
#![cfg(feature = "derive")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use matroska_cache::{cached, dep, depends_on, Dependencies, MatroskaCache};
use serde::{Deserialize, Serialize};
use support::Harness;
use tokio::sync::Barrier;

#[derive(Debug, PartialEq)]
struct DbError(&'static str);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Dependencies)]
#[deps(id = "user")]
struct Profile {
    #[deps(key)]
    id: u64,
    name: String,
}

/// What the tests' functions read, and how often they ran.
struct Repo {
    cache: MatroskaCache,
    runs: AtomicU32,
    /// Released when both of two concurrent computations have started.
    both_running: Barrier,
}

impl Repo {
    fn new(cache: &MatroskaCache) -> Self {
        Repo {
            cache: cache.clone(),
            runs: AtomicU32::new(0),
            both_running: Barrier::new(2),
        }
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }

    #[cached(cache = self.cache, ttl = "5m")]
    async fn profile(&self, id: u64, #[skip] fail: bool) -> Result<Profile, DbError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        depends_on([dep::id("user", id)]);
        if fail {
            return Err(DbError("connection refused"));
        }
        Ok(Profile {
            id,
            name: format!("user {id}"),
        })
    }

    #[cached(cache = self.cache, ttl = "5m")]
    async fn find(&self, id: u64) -> Option<String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        depends_on([dep::id("user", id)]);
        id.is_multiple_of(2).then(|| format!("user {id}"))
    }

    #[cached(cache = self.cache, ttl = "5m", cache_none = true)]
    async fn find_or_none(&self, id: u64) -> Option<String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        depends_on([dep::id("user", id)]);
        id.is_multiple_of(2).then(|| format!("user {id}"))
    }

    #[cached(cache = self.cache, ttl = "1h 30m")]
    async fn count(&self, tag: String) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        depends_on([dep::tag(&tag)]);
        tag.len() as u64
    }

    /// No `depends_on`: the dependencies come from the value.
    #[cached(cache = self.cache, ttl = "60s", deps_from_value)]
    async fn team(&self, ids: Vec<u64>) -> Result<Vec<Profile>, DbError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(ids
            .into_iter()
            .map(|id| Profile {
                id,
                name: format!("user {id}"),
            })
            .collect())
    }

    /// A page built from cached parts: what they depend on, it depends on.
    #[cached(cache = self.cache, ttl = "60s")]
    async fn page(&self, ids: Vec<u64>) -> Result<String, DbError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut page = String::new();
        for id in ids {
            match self.find(id).await {
                Some(name) => page.push_str(&name),
                None => page.push_str("(gone)"),
            }
            page.push('\n');
        }
        Ok(page)
    }

    /// Waits until another computation runs at the same time.
    #[cached(cache = self.cache, ttl = "60s")]
    async fn meet(&self, id: u64) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.both_running.wait().await;
        id
    }

    #[cached(cache = self.cache, ttl = "60s")]
    async fn slow(&self, id: u64) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        id
    }

    /// Products under a price: `None` means no filter.
    #[cached(cache = self.cache, ttl = "60s")]
    async fn products(&self, max_price: Option<f64>) -> Vec<String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match max_price {
            None => vec!["lamp".into(), "desk".into()],
            Some(max) if max >= 10.0 => vec!["lamp".into()],
            Some(_) => vec![],
        }
    }

    #[cached(cache = self.cache, ttl = "60s")]
    async fn search(&self, query: String) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst);
        query.len()
    }

    #[cached(cache = self.cache, ttl = "60s")]
    async fn by_coordinates(&self, cells: HashMap<(u8, u8), u8>) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst);
        cells.len()
    }
}

async fn ok_values_are_stored_errors_are_not(h: Harness) {
    let repo = Repo::new(&h.cache);
    let expected = Profile {
        id: 7,
        name: "user 7".into(),
    };
    assert_eq!(repo.profile(7, false).await, Ok(expected.clone()));
    assert_eq!(repo.profile(7, false).await, Ok(expected.clone()));
    assert_eq!(repo.runs(), 1);
    assert_eq!(
        h.cache.deps(&repo.profile_key(7)).await.unwrap(),
        Some(vec![dep::id("user", 7)])
    );
    assert_eq!(h.cache.invalidate([dep::id("user", 7)]).await.unwrap(), 1);
    assert_eq!(repo.profile(7, false).await, Ok(expected));
    assert_eq!(repo.runs(), 2);

    // The error reaches the caller unchanged, every time: it is never stored.
    assert_eq!(
        repo.profile(8, true).await,
        Err(DbError("connection refused"))
    );
    assert_eq!(
        repo.profile(8, true).await,
        Err(DbError("connection refused"))
    );
    assert_eq!(repo.runs(), 4);
    assert!(!h.cache.has(&repo.profile_key(8)).await.unwrap());
}

async fn none_is_stored_only_when_asked(h: Harness) {
    let repo = Repo::new(&h.cache);
    assert_eq!(repo.find(1).await, None);
    assert_eq!(repo.find(1).await, None);
    assert_eq!(repo.runs(), 2);
    assert!(!h.cache.has(&repo.find_key(1)).await.unwrap());
    assert_eq!(repo.find(2).await, Some("user 2".into()));
    assert_eq!(repo.find(2).await, Some("user 2".into()));
    assert_eq!(repo.runs(), 3);

    assert_eq!(repo.find_or_none(1).await, None);
    assert_eq!(repo.find_or_none(1).await, None);
    assert_eq!(repo.runs(), 4);
    assert!(h.cache.has(&repo.find_or_none_key(1)).await.unwrap());
    // A stored `None` goes with its dependency, like any value.
    h.cache.invalidate([dep::id("user", 1)]).await.unwrap();
    assert!(!h.cache.has(&repo.find_or_none_key(1)).await.unwrap());
}

async fn plain_values_are_always_stored(h: Harness) {
    let repo = Repo::new(&h.cache);
    assert_eq!(repo.count("homepage".into()).await, 8);
    assert_eq!(repo.count("homepage".into()).await, 8);
    assert_eq!(repo.runs(), 1);
    h.cache.invalidate([dep::tag("homepage")]).await.unwrap();
    assert_eq!(repo.count("homepage".into()).await, 8);
    assert_eq!(repo.runs(), 2);
}

async fn dependencies_from_the_value(h: Harness) {
    let repo = Repo::new(&h.cache);
    let team = repo.team(vec![1, 2]).await.unwrap();
    assert_eq!(team.len(), 2);
    assert_eq!(
        h.cache.deps(&repo.team_key(vec![1, 2])).await.unwrap(),
        Some(vec![dep::id("user", 1), dep::id("user", 2)])
    );
    assert_eq!(h.cache.invalidate([dep::id("user", 2)]).await.unwrap(), 1);
    repo.team(vec![1, 2]).await.unwrap();
    assert_eq!(repo.runs(), 2);
}

async fn companions_bypass_and_name_the_entry(h: Harness) {
    let repo = Repo::new(&h.cache);
    let key = repo.profile_key(3);
    assert_eq!(key, "cached::Repo::profile(3)");
    // The skipped argument and the receiver are not part of the key.
    repo.profile(3, false).await.unwrap();
    assert!(h.cache.has(&key).await.unwrap());
    assert!(h.cache.delete(&key).await.unwrap());

    // `_uncached` runs the body and stores nothing, every time.
    repo.profile_uncached(4, false).await.unwrap();
    repo.profile_uncached(4, false).await.unwrap();
    assert_eq!(repo.runs(), 3);
    assert!(!h.cache.has(&repo.profile_key(4)).await.unwrap());
}

async fn nested_calls_add_their_dependencies(h: Harness) {
    let repo = Repo::new(&h.cache);
    // 1 is not found (nothing stored for it), 2 is: the page depends on both.
    assert_eq!(repo.page(vec![1, 2]).await.unwrap(), "(gone)\nuser 2\n");
    let key = repo.page_key(vec![1, 2]);
    assert_eq!(
        h.cache.deps(&key).await.unwrap(),
        Some(vec![dep::id("user", 1), dep::id("user", 2)])
    );
    // User 1 is created: the page that said it was gone must go.
    h.cache.invalidate([dep::id("user", 1)]).await.unwrap();
    assert!(!h.cache.has(&key).await.unwrap());

    // A hit of the inner function inside a new outer computation adds its dependencies too.
    repo.page(vec![2]).await.unwrap();
    assert_eq!(
        h.cache.deps(&repo.page_key(vec![2])).await.unwrap(),
        Some(vec![dep::id("user", 2)])
    );
}

async fn one_computation_per_key_not_per_function(h: Harness) {
    let repo = Arc::new(Repo::new(&h.cache));
    // Concurrent misses of one key run the body once.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move { repo.slow(5).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 5);
    }
    assert_eq!(repo.runs(), 1);

    // Misses of two keys run at the same time: each computation waits for the other to
    // start, which one global lock (the `cached` crate's) would never let happen.
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(repo.meet(1), repo.meet(2))
    })
    .await
    .expect("two keys' computations were serialised");
    assert_eq!((a, b), (1, 2));
}

async fn unencodable_arguments_run_without_the_cache(h: Harness) {
    let repo = Repo::new(&h.cache);
    let cells: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let faults = h.cache.stats().faults;
    assert_eq!(repo.by_coordinates(cells.clone()).await, 1);
    assert_eq!(repo.by_coordinates(cells.clone()).await, 1);
    assert_eq!(repo.runs(), 2);
    assert_eq!(h.cache.stats().faults, faults + 2);
    assert!(repo.by_coordinates_key(cells).starts_with("<no key: "));
}

/// JSON writes NaN and the infinities as `null`, like `None`: a client's `?max_price=NaN`
/// must not store its (empty) result under the unfiltered listing's key.
async fn non_finite_floats_run_without_the_cache(h: Harness) {
    let repo = Repo::new(&h.cache);
    assert_eq!(repo.products(None).await.len(), 2);
    let faults = h.cache.stats().faults;
    assert!(repo.products(Some(f64::NAN)).await.is_empty());
    repo.products(Some(f64::INFINITY)).await;
    repo.products(Some(f64::NEG_INFINITY)).await;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(repo.products_key(Some(bad)).starts_with("<no key: "));
    }
    assert_eq!(h.cache.stats().faults, faults + 3);
    assert_eq!(repo.runs(), 4);
    // The unfiltered listing is untouched and still cached.
    assert_eq!(repo.products(None).await.len(), 2);
    assert_eq!(repo.products(Some(20.0)).await.len(), 1);
    assert_eq!(repo.runs(), 5);
    assert_ne!(repo.products_key(None), repo.products_key(Some(0.0)));
}

/// Long arguments store under a digest: the key stays within what a write accepts.
async fn long_arguments_store_under_a_digest(h: Harness) {
    let repo = Repo::new(&h.cache);
    let long = "q".repeat(60_000);
    let key = repo.search_key(long.clone());
    assert!(key.len() <= matroska_cache::MAX_KEY_LEN, "{}", key.len());
    assert!(key.starts_with("cached::Repo::search(#sha256="), "{key}");
    assert_ne!(key, repo.search_key(format!("{long}!")));
    assert_eq!(repo.search(long.clone()).await, 60_000);
    assert_eq!(repo.search(long).await, 60_000);
    assert_eq!(repo.runs(), 1);
    assert!(h.cache.has(&key).await.unwrap());
}

backend_tests!(
    non_finite_floats_run_without_the_cache,
    long_arguments_store_under_a_digest,
    ok_values_are_stored_errors_are_not,
    none_is_stored_only_when_asked,
    plain_values_are_always_stored,
    dependencies_from_the_value,
    companions_bypass_and_name_the_entry,
    nested_calls_add_their_dependencies,
    one_computation_per_key_not_per_function,
    unencodable_arguments_run_without_the_cache,
);

// Free functions on a static cache, and the key format.

static CACHE: LazyLock<MatroskaCache> = LazyLock::new(MatroskaCache::in_memory);
static RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(cache = CACHE, ttl = "5m")]
async fn profile(id: u64) -> Result<Profile, DbError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    depends_on([dep::id("user", id)]);
    Ok(Profile {
        id,
        name: format!("user {id}"),
    })
}

#[cached(cache = CACHE, ttl = "5m", version = 3)]
async fn render(slug: &str, page: Option<u32>, filters: BTreeMap<String, Vec<i32>>) -> String {
    format!("{slug} {page:?} {filters:?}")
}

#[cached(cache = CACHE, ttl = "5m")]
async fn decode<T>(text: String) -> Option<T>
where
    T: Serialize + serde::de::DeserializeOwned + Send + std::str::FromStr,
{
    text.parse().ok()
}

#[cached(cache = CACHE, ttl = "5m", name = "settings")]
async fn load_settings() -> BTreeMap<String, String> {
    BTreeMap::from([("theme".to_owned(), "dark".to_owned())])
}

#[cached(cache = CACHE, ttl = "5m", key = format!("article:{id}:html"))]
async fn article_html(id: u64, #[skip] db: &Db) -> String {
    depends_on([dep::id("article", id)]);
    format!("<h1>{}</h1>", db.title)
}

/// Not `Serialize`: usable only as a `#[skip]` parameter, or with `key = ...`.
struct Db {
    title: &'static str,
}

mod nested {
    use super::*;

    /// The same name as the outer `profile`: another module, another key.
    #[cached(cache = CACHE, ttl = "5m")]
    pub async fn profile(id: u64) -> Result<Profile, DbError> {
        Ok(Profile {
            id,
            name: "nested".into(),
        })
    }
}

#[test]
fn keys_are_pinned() {
    assert_eq!(profile_key(42), "cached::profile(42)");
    assert_eq!(nested::profile_key(42), "cached::nested::profile(42)");
    let filters = BTreeMap::from([("b".to_owned(), vec![2]), ("a".to_owned(), vec![1, -1])]);
    assert_eq!(
        render_key("intro \"x\"", Some(2), filters),
        r#"cached::render@v3("intro \"x\"",2,{"a":[1,-1],"b":[2]})"#
    );
    assert_eq!(
        render_key("s", None, BTreeMap::new()),
        "cached::render@v3(\"s\",null,{})"
    );
    assert_eq!(
        decode_key::<u32>("1".into()),
        "cached::decode::<u32>(\"1\")"
    );
    assert_eq!(
        decode_key::<i64>("1".into()),
        "cached::decode::<i64>(\"1\")"
    );
    assert_eq!(load_settings_key(), "settings()");
    assert_eq!(article_html_key(9), "cached::article_html=article:9:html");
}

#[tokio::test]
async fn free_functions_on_a_static_cache() {
    RUNS.store(0, Ordering::SeqCst);
    profile(1).await.unwrap();
    profile(1).await.unwrap();
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    // Same-named functions of two modules do not collide.
    assert_eq!(nested::profile(1).await.unwrap().name, "nested");
    assert_eq!(profile(1).await.unwrap().name, "user 1");

    // Generic functions: one entry per type argument.
    assert_eq!(decode::<u8>("300".into()).await, None);
    assert_eq!(decode::<u32>("300".into()).await, Some(300));
    assert_eq!(decode::<u8>("300".into()).await, None);

    let db = Db { title: "Hello" };
    assert_eq!(article_html(5, &db).await, "<h1>Hello</h1>");
    assert_eq!(
        CACHE
            .get::<String>("cached::article_html=article:5:html")
            .await
            .unwrap()
            .as_deref(),
        Some("<h1>Hello</h1>")
    );
    assert_eq!(CACHE.invalidate([dep::id("article", 5)]).await.unwrap(), 1);
    assert_eq!(load_settings().await["theme"], "dark");
    assert!(CACHE.has("settings()").await.unwrap());
}

static HEADLINE_RUNS: AtomicU32 = AtomicU32::new(0);
static DATABASE_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cached(cache = CACHE, ttl = "300ms", fail_safe = "1m", refresh_after = "150ms")]
async fn headline(id: u64) -> Result<String, DbError> {
    if DATABASE_DOWN.load(Ordering::SeqCst) {
        return Err(DbError("down"));
    }
    let run = HEADLINE_RUNS.fetch_add(1, Ordering::SeqCst);
    depends_on([dep::id("article", id)]);
    Ok(format!("headline {id} v{run}"))
}

/// `refresh_after` and `fail_safe` in the attribute: a due hit returns at once and refreshes
/// in the background; past the TTL a failing body returns the expired value; an
/// invalidated one is never returned.
#[tokio::test]
async fn refresh_ahead_and_fail_safe_in_the_attribute() {
    assert_eq!(headline(7).await.unwrap(), "headline 7 v0");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Due: the old value at once, a refresh behind it.
    assert_eq!(headline(7).await.unwrap(), "headline 7 v0");
    for _ in 0..100 {
        if HEADLINE_RUNS.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(HEADLINE_RUNS.load(Ordering::SeqCst), 2);
    // (The refresh stores in the background; wait for it.)
    let mut refreshed = String::new();
    for _ in 0..100 {
        refreshed = CACHE
            .get(&headline_key(7))
            .await
            .unwrap()
            .unwrap_or_default();
        if refreshed == "headline 7 v1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refreshed, "headline 7 v1");

    // Past the TTL with the database down: the expired value, then the error once the
    // entry is invalidated.
    tokio::time::sleep(Duration::from_millis(600)).await;
    DATABASE_DOWN.store(true, Ordering::SeqCst);
    assert_eq!(headline(7).await.unwrap(), "headline 7 v1");
    assert_eq!(CACHE.invalidate([dep::id("article", 7)]).await.unwrap(), 1);
    assert_eq!(headline(7).await, Err(DbError("down")));
    DATABASE_DOWN.store(false, Ordering::SeqCst);
}

/// The futures are `Send` (so they can be spawned) whenever the body's is.
#[test]
fn futures_are_send() {
    fn assert_send<F: std::future::Future + Send>(_: F) {}
    let repo = Repo::new(&MatroskaCache::in_memory());
    assert_send(repo.profile(1, false));
    assert_send(repo.page(vec![]));
    assert_send(profile(1));
    let db = Db { title: "" };
    assert_send(article_html(1, &db));
}

//! Invalidation: the original's scenarios, replacement semantics, counting, fan-out.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use matroska_cache::{dep, Dep, MatroskaCache};
use serde::{Deserialize, Serialize};
use support::Harness;

const MINUTE: Duration = Duration::from_secs(60);

/// The original's `test_cache_plain_dependencies`.
async fn original_plain_dependencies(h: Harness) {
    let cache = &h.cache;
    let data = vec![BTreeMap::from([("id", 1)]), BTreeMap::from([("id", 2)])];
    let deps = [dep::id("article", 1), dep::id("article", 2)];
    cache
        .put("articles-list", &data, deps, Duration::from_secs(1000))
        .await
        .unwrap();
    assert_eq!(
        cache
            .get::<Vec<BTreeMap<String, i32>>>("articles-list")
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );

    // Invalidate some random missing thing.
    assert_eq!(cache.invalidate([dep::tag("hop")]).await.unwrap(), 0);
    assert!(cache.has("articles-list").await.unwrap());

    // Now invalidate one of the articles.
    assert_eq!(cache.invalidate([dep::id("article", 1)]).await.unwrap(), 1);
    assert!(!cache.has("articles-list").await.unwrap());
    assert_eq!(
        cache
            .get::<Vec<BTreeMap<String, i32>>>("articles-list")
            .await
            .unwrap(),
        None
    );

    // delete()
    cache
        .put("test", &1, [], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(cache.has("test").await.unwrap());
    cache.delete("test").await.unwrap();
    assert!(!cache.has("test").await.unwrap());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Book {
    id: u32,
    category: String,
    title: Option<String>,
}

/// The original's books database with a cached per-category list.
struct Library {
    cache: MatroskaCache,
    books: Mutex<BTreeMap<u32, Book>>,
}

impl Library {
    fn category_tag(category: &str) -> Dep {
        dep::tag(&format!("books:category={category}"))
    }

    /// (cache hit, books)
    async fn list(&self, category: &str) -> (bool, Vec<Book>) {
        let key = format!("books-{category}");
        if let Some(books) = self.cache.get::<Vec<Book>>(&key).await.unwrap() {
            return (true, books);
        }
        let books: Vec<Book> = self
            .books
            .lock()
            .unwrap()
            .values()
            .filter(|b| b.category == category)
            .cloned()
            .collect();
        let deps = books
            .iter()
            .map(|b| dep::id("book", b.id))
            .chain([Self::category_tag(category)]);
        self.cache
            .put(&key, &books, deps, Duration::from_secs(600))
            .await
            .unwrap();
        (false, books)
    }

    async fn add(&self, category: &str) -> Book {
        let book = {
            let mut books = self.books.lock().unwrap();
            let id = books.len() as u32 + 1;
            let book = Book {
                id,
                category: category.into(),
                title: None,
            };
            books.insert(id, book.clone());
            book
        };
        self.cache
            .invalidate([Self::category_tag(category)])
            .await
            .unwrap();
        book
    }

    async fn modify(&self, id: u32, title: &str) {
        self.books.lock().unwrap().get_mut(&id).unwrap().title = Some(title.into());
        self.cache.invalidate([dep::id("book", id)]).await.unwrap();
    }
}

/// The original's `test_collection_dependencies`.
async fn original_collection_dependencies(h: Harness) {
    let lib = Library {
        cache: h.cache.clone(),
        books: Mutex::default(),
    };
    let mut expected = vec![];
    assert_eq!(lib.list("sci-fi").await, (false, expected.clone()));
    assert_eq!(lib.list("sci-fi").await, (true, expected.clone()));

    // A fantasy book does not touch the sci-fi list.
    lib.add("fantasy").await;
    assert_eq!(lib.list("sci-fi").await, (true, expected.clone()));

    // A sci-fi book invalidates it.
    let mut book = lib.add("sci-fi").await;
    expected.push(book.clone());
    assert_eq!(lib.list("sci-fi").await, (false, expected.clone()));
    assert_eq!(lib.list("sci-fi").await, (true, expected.clone()));

    // Modifying a sci-fi book invalidates it.
    lib.modify(book.id, "Caching is Easy").await;
    book.title = Some("Caching is Easy".into());
    expected[0] = book;
    assert_eq!(lib.list("sci-fi").await, (false, expected.clone()));
    assert_eq!(lib.list("sci-fi").await, (true, expected.clone()));

    // Adding and modifying other books does not.
    let other = lib.add("tutorials").await;
    lib.modify(other.id, "Easy Gardening").await;
    assert_eq!(lib.list("sci-fi").await, (true, expected.clone()));
}

async fn put_replaces_dependencies(h: Harness) {
    let c = &h.cache;
    c.put("k", "old", [dep::id("a", 1), dep::tag("shared")], MINUTE)
        .await
        .unwrap();
    c.put("k", "new", [dep::id("b", 1), dep::tag("shared")], MINUTE)
        .await
        .unwrap();
    // The old dependency no longer drops the new value.
    assert_eq!(c.invalidate([dep::id("a", 1)]).await.unwrap(), 0);
    assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("new"));
    assert_eq!(
        c.deps("k").await.unwrap().unwrap(),
        vec![dep::id("b", 1), dep::tag("shared")]
    );
    assert_eq!(c.invalidate([dep::id("b", 1)]).await.unwrap(), 1);
    assert!(!c.has("k").await.unwrap());
    // Putting again without dependencies: nothing drops it.
    c.put("k", "plain", [], MINUTE).await.unwrap();
    assert_eq!(
        c.invalidate([dep::tag("shared"), dep::id("b", 1)])
            .await
            .unwrap(),
        0
    );
    assert!(c.has("k").await.unwrap());
    assert_eq!(c.deps("k").await.unwrap().unwrap(), vec![]);
}

async fn each_dropped_entry_counts_once(h: Harness) {
    let c = &h.cache;
    let (a, b) = (dep::id("a", 1), dep::tag("b"));
    // Duplicate dependencies in a put are stored once.
    c.put("both", &1, [a.clone(), b.clone(), a.clone()], MINUTE)
        .await
        .unwrap();
    c.put("only-a", &2, [a.clone()], MINUTE).await.unwrap();
    c.put("only-b", &3, [b.clone()], MINUTE).await.unwrap();
    c.put("neither", &4, [dep::tag("c")], MINUTE).await.unwrap();
    assert_eq!(c.deps("both").await.unwrap().unwrap().len(), 2);
    assert_eq!(
        c.invalidate([a.clone(), b.clone(), a.clone()])
            .await
            .unwrap(),
        3
    );
    assert_eq!(c.invalidate([a, b]).await.unwrap(), 0);
    assert!(c.has("neither").await.unwrap());
    assert_eq!(c.invalidate(Vec::<Dep>::new()).await.unwrap(), 0);
    let stats = c.stats();
    assert_eq!((stats.invalidations, stats.dropped), (3, 3));
}

async fn colliding_texts_of_the_original_stay_apart(h: Harness) {
    let c = &h.cache;
    c.put("admin-1", &1, [dep::id("user:admin", 1)], MINUTE)
        .await
        .unwrap();
    c.put("user-admin:1", &2, [dep::id("user", "admin:1")], MINUTE)
        .await
        .unwrap();
    assert_eq!(c.invalidate([dep::id("user", "admin:1")]).await.unwrap(), 1);
    assert!(c.has("admin-1").await.unwrap());
    assert!(!c.has("user-admin:1").await.unwrap());
}

/// More dependents than one batch: the batched path (HSCAN + batches) on Redis.
async fn large_fan_out(h: Harness) {
    let cache = h.with_batch_size(97).await;
    let n = 3_000;
    for i in 0..n {
        let deps = [
            dep::tag("all"),
            dep::id("item", i),
            dep::tag(if i % 2 == 0 { "even" } else { "odd" }),
        ];
        cache.put(&format!("k{i}"), &i, deps, MINUTE).await.unwrap();
    }
    cache
        .put("unrelated", &0, [dep::tag("other")], MINUTE)
        .await
        .unwrap();
    // Garbage in the indexes: a deleted entry, and one replaced without "all" and "even".
    cache.delete("k2").await.unwrap();
    cache
        .put("k4", &4, [dep::tag("odd")], MINUTE)
        .await
        .unwrap();
    // Two overlapping dependencies: every even entry is reached twice and counted once.
    assert_eq!(
        cache
            .invalidate([dep::tag("even"), dep::tag("all")])
            .await
            .unwrap(),
        n as u64 - 2
    );
    for i in (0..n).step_by(97) {
        assert!(!cache.has(&format!("k{i}")).await.unwrap());
    }
    assert!(cache.has("unrelated").await.unwrap());
    assert_eq!(
        cache.get::<u32>("k4").await.unwrap(),
        Some(4),
        "k4 no longer depends on them"
    );
    assert_eq!(cache.invalidate([dep::tag("odd")]).await.unwrap(), 1);
    // The invalidations removed every member they visited, garbage included; what is left
    // on Redis is the per-item indexes' garbage (the memory backend unlinks it on removal).
    let left = if h.is_redis() { n as u64 + 1 } else { 1 };
    assert_eq!(h.index_members(), left);
    // The visited indexes are gone; the per-item indexes hold garbage until pruned.
    cache.prune().await.unwrap();
    assert_eq!(h.index_members(), 1);
}

/// Dropping the future of `invalidate` once it has begun (a timeout around it, a web client
/// that disconnects) does not leave the rest of the dependents readable.
async fn a_dropped_invalidation_still_finishes(h: Harness) {
    let cache = h.with_batch_size(50).await;
    let n = 5_000u32;
    for i in 0..n {
        cache
            .put(&format!("k{i}"), &i, [dep::tag("all")], MINUTE)
            .await
            .unwrap();
    }
    // A zero timeout polls the invalidation once, then drops it (5,000 dependents take
    // longer than that, though its own task runs on another worker thread).
    let _ = tokio::time::timeout(Duration::ZERO, cache.invalidate([dep::tag("all")])).await;
    // It goes on by itself: poll (for a bounded time) until every dependent is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut left = n;
    while left > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = 0;
        for i in (0..n).step_by(50) {
            left += u32::from(cache.has(&format!("k{i}")).await.unwrap());
        }
    }
    assert_eq!(left, 0, "sampled dependents still readable after the drop");
    for i in 0..n {
        assert!(!cache.has(&format!("k{i}")).await.unwrap(), "k{i}");
    }
    assert_eq!(cache.stats().invalidations, 1);
}

/// `invalidate` takes dependencies by value or by reference.
async fn dependencies_by_value_or_by_reference(h: Harness) {
    let c = &h.cache;
    let deps = vec![dep::tag("a"), dep::tag("b")];
    for key in ["1", "2", "3", "4"] {
        c.put(key, key, [dep::tag("a")], MINUTE).await.unwrap();
        let dropped = match key {
            "1" => c.invalidate([dep::tag("a")]).await,
            "2" => c.invalidate(&deps).await,
            "3" => c.invalidate(deps.as_slice()).await,
            _ => {
                c.invalidate(deps.iter().filter(|d| d.as_str() == "tag:a"))
                    .await
            }
        };
        assert_eq!(dropped.unwrap(), 1);
    }
}

/// Entries put again while a large invalidation runs are not deleted by it.
async fn recached_entries_survive_a_running_invalidation(h: Harness) {
    let cache = h.with_batch_size(50).await;
    let n = 4_000u32;
    for i in 0..n {
        cache
            .put(&format!("k{i}"), &0, [dep::tag("all")], MINUTE)
            .await
            .unwrap();
    }
    let invalidation = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.invalidate([dep::tag("all")]).await.unwrap() })
    };
    // Wait until the invalidation has visibly begun (some entries gone), then re-cache every
    // key with a new value: those puts begin after the invalidation did.
    let probe = h.other_client().await;
    let mut begun = false;
    for _ in 0..10_000 {
        let mut gone = 0;
        for i in (0..n).step_by(40) {
            if !probe.has(&format!("k{i}")).await.unwrap() {
                gone += 1;
            }
        }
        if gone > 0 {
            begun = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    // On Redis 80 batches take long enough to be caught in the middle.
    assert!(begun || (!h.is_redis() && invalidation.is_finished()));
    let recached: Vec<u32> = (0..n).step_by(3).collect();
    for i in &recached {
        probe
            .put(&format!("k{i}"), &1, [dep::tag("all")], MINUTE)
            .await
            .unwrap();
    }
    let dropped = invalidation.await.unwrap();
    assert!(dropped <= n as u64);
    for i in &recached {
        assert_eq!(
            probe.get::<u32>(&format!("k{i}")).await.unwrap(),
            Some(1),
            "k{i} was re-cached"
        );
    }
    // And a later invalidation drops them.
    assert_eq!(
        cache.invalidate([dep::tag("all")]).await.unwrap(),
        recached.len() as u64
    );
}

async fn prune_leaves_only_live_members(h: Harness) {
    let c = &h.cache;
    let deps = |i: u32| {
        [
            dep::tag("hot"),
            dep::id("item", i),
            dep::tag(&format!("group{}", i % 10)),
        ]
    };
    for i in 0..500 {
        c.put(&format!("k{i}"), &i, deps(i), MINUTE).await.unwrap();
    }
    // Churn: replacements with other deps, deletions, expiries, invalidation through one dep.
    for i in 0..100 {
        c.put(&format!("k{i}"), &i, [dep::tag("replaced")], MINUTE)
            .await
            .unwrap();
    }
    for i in 100..200 {
        c.delete(&format!("k{i}")).await.unwrap();
    }
    for i in 200..300 {
        c.put(&format!("k{i}"), &i, deps(i), Duration::from_millis(50))
            .await
            .unwrap();
    }
    c.invalidate([dep::tag("group3")]).await.unwrap(); // 10 of the live ones, via one dep
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let report = c.prune().await.unwrap();
    // The memory backend's eviction listener may have unlinked the expired entries' members
    // already (moka runs it during housekeeping, whenever that comes); Redis keeps them.
    assert!(report.removed > 0 || !h.is_redis(), "{report:?}");
    // Live: k0..k99 with one dep each; k300..k499 minus group3 with three deps each.
    let live_rich = (300..500).filter(|i| i % 10 != 3).count() as u64;
    assert_eq!(h.index_members(), 100 + 3 * live_rich);
    // A second prune finds nothing more, and nothing live was lost.
    assert_eq!(c.prune().await.unwrap().removed, 0);
    assert_eq!(c.invalidate([dep::tag("hot")]).await.unwrap(), live_rich);
    assert_eq!(c.invalidate([dep::tag("replaced")]).await.unwrap(), 100);
}

/// Hostile sizes: thousands of dependencies on one entry and in one invalidation.
async fn many_dependencies_per_entry_and_per_call(h: Harness) {
    let c = &h.cache;
    let deps: Vec<Dep> = (0..5_000).map(|i| dep::id("part", i)).collect();
    c.put("assembly", &1, deps.clone(), MINUTE).await.unwrap();
    c.put("other", &2, [dep::id("part", 4_999)], MINUTE)
        .await
        .unwrap();
    assert_eq!(c.deps("assembly").await.unwrap().unwrap().len(), 5_000);
    assert_eq!(c.invalidate([dep::id("part", 1_234)]).await.unwrap(), 1);
    assert!(c.has("other").await.unwrap());
    c.put("assembly", &1, deps.clone(), MINUTE).await.unwrap();
    assert_eq!(c.invalidate(deps).await.unwrap(), 2);
    assert!(!c.has("assembly").await.unwrap() && !c.has("other").await.unwrap());
}

/// One call naming thousands of dependencies, each with its own dependents (some shared):
/// the count is exact, everything goes, entries of other dependencies stay.
async fn thousands_of_dependencies_in_one_call(h: Harness) {
    let cache = h.with_batch_size(97).await;
    let n = 3_000u32;
    for i in 0..n {
        let mut deps = vec![dep::id("item", i)];
        if i % 3 == 0 {
            deps.push(dep::id("item", (i + 1) % n)); // reached through two dependencies
        }
        cache.put(&format!("k{i}"), &i, deps, MINUTE).await.unwrap();
    }
    // A dependency with many dependents inside the same call: the scanned path.
    for i in 0..500 {
        cache
            .put(&format!("wide{i}"), &i, [dep::tag("wide")], MINUTE)
            .await
            .unwrap();
    }
    cache
        .put("other", &0, [dep::tag("other")], MINUTE)
        .await
        .unwrap();
    let mut deps: Vec<Dep> = (0..n).map(|i| dep::id("item", i)).collect();
    deps.push(dep::tag("wide"));
    assert_eq!(cache.invalidate(&deps).await.unwrap(), u64::from(n) + 500);
    for i in (0..n).step_by(7) {
        assert!(!cache.has(&format!("k{i}")).await.unwrap(), "k{i}");
    }
    assert!(!cache.has("wide499").await.unwrap());
    assert!(cache.has("other").await.unwrap());
    assert_eq!(
        h.index_members(),
        1,
        "only the other entry's member is left"
    );
}

/// Invalidating dependencies nobody depends on leaves nothing behind per dependency, and on
/// Redis takes one round trip.
async fn invalidating_without_dependents_leaves_nothing_behind(h: Harness) {
    let c = &h.cache;
    let ticket = c.ticket().await.unwrap();
    let deps: Vec<Dep> = (0..2_000).map(|i| dep::id("nobody", i)).collect();
    for dep in &deps {
        assert_eq!(c.invalidate([dep.clone()]).await.unwrap(), 0);
    }
    // The fence still works for them, and none of them still counts as running: a ticket
    // taken after them stores (checked last: the entry leaves keys behind).
    assert!(!c
        .put_fenced("k", &1, [dep::id("nobody", 7)], MINUTE, &ticket)
        .await
        .unwrap());
    let stores_after = || async {
        let after = c.ticket().await.unwrap();
        assert!(c
            .put_fenced("k", &1, [dep::id("nobody", 7)], MINUTE, &after)
            .await
            .unwrap());
    };
    if !h.is_redis() {
        assert_eq!(h.index_members(), 0);
        return stores_after().await;
    }
    // Per shard, only the counter, epoch, fence table, directory version and leases may
    // exist, and the prefix's number of shards: no index, no directory, no mark per
    // dependency.
    let keys = h.redis_keys();
    assert!(
        keys.iter().all(|k| [":s", ":e", ":f", ":g", ":v", ":n"]
            .iter()
            .any(|end| k.ends_with(end))
            || k.contains("}:l:")),
        "only counters, epochs, ticket floors, fence tables, directory versions and leases may \
         exist, found {} keys \
         such as {:?}",
        keys.len(),
        &keys[..keys.len().min(5)]
    );
    let support::Kind::Redis { server, prefix } = &h.kind else {
        return stores_after().await; // the round trips below are counted on one server
    };
    let mut conn = server.connection();
    assert!(keys.len() <= 5, "{keys:?}");
    let fences: u64 = ::redis::cmd("HLEN")
        .arg(format!("{{{prefix}}}:f"))
        .query(&mut conn)
        .unwrap();
    assert!(fences <= 2_000);

    // One round trip: count the commands Redis ran for one more invalidation.
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    c.invalidate([dep::id("nobody", 9_999)]).await.unwrap();
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    // Commands a script runs are counted too; the client sends one EVALSHA and nothing else
    // (no HSCAN, no drop script, no second round trip of any kind).
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(calls("evalsha"), 1, "{stats}");
    for other in [
        "eval", "hscan", "hgetall", "unlink", "get", "mget", "script",
    ] {
        assert_eq!(calls(other), 0, "{other}: {stats}");
    }
    stores_after().await;
}

/// A fenced put whose ticket predates an invalidation is refused, even when a plain put of the
/// same key and dependency came in between (on a sharded cache, that plain put registered the
/// entry's shard at the dependency's home after the invalidation had run there: the fenced
/// put must still meet the home's mark, not only its own shard's).
async fn a_plain_put_in_between_does_not_let_an_old_ticket_store(h: Harness) {
    let c = &h.cache;
    for i in 0..20u64 {
        let (key, d) = (format!("page:{i}"), dep::id("article", i));
        let ticket = c.ticket().await.unwrap();
        // Nobody depends on it yet: on a sharded cache this ends at the dependency's home.
        assert_eq!(c.invalidate([d.clone()]).await.unwrap(), 0);
        c.put(&key, "new", [d.clone()], MINUTE).await.unwrap();
        let stored = c
            .put_fenced(
                &key,
                "computed before the invalidation",
                [d],
                MINUTE,
                &ticket,
            )
            .await
            .unwrap();
        assert!(!stored, "{key}: an old ticket stored");
        assert_eq!(c.get::<String>(&key).await.unwrap().as_deref(), Some("new"));
    }
}

backend_tests!(
    a_plain_put_in_between_does_not_let_an_old_ticket_store,
    thousands_of_dependencies_in_one_call,
    invalidating_without_dependents_leaves_nothing_behind,
    a_dropped_invalidation_still_finishes,
    dependencies_by_value_or_by_reference,
    many_dependencies_per_entry_and_per_call,
    original_plain_dependencies,
    original_collection_dependencies,
    put_replaces_dependencies,
    each_dropped_entry_counts_once,
    colliding_texts_of_the_original_stay_apart,
    large_fan_out,
    recached_entries_survive_a_running_invalidation,
    prune_leaves_only_live_members,
);

//! put / get / has / delete, values and keys of every kind, on both backends.

mod support;

use std::time::Duration;

use matroska_cache::{dep, Error, MAX_KEY_LEN, MAX_TTL};
use serde::{Deserialize, Serialize};
use support::Harness;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Article {
    id: u32,
    title: String,
    author: Author,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Author {
    id: u32,
    name: String,
}

fn articles() -> Vec<Article> {
    let author = Author {
        id: 1,
        name: "kolypto".into(),
    };
    vec![
        Article {
            id: 1,
            title: "Python".into(),
            author: author.clone(),
        },
        Article {
            id: 2,
            title: "Cache".into(),
            author,
        },
    ]
}

async fn put_get_has_delete(h: Harness) {
    let c = &h.cache;
    assert_eq!(c.get::<Vec<Article>>("articles-list").await.unwrap(), None);
    assert!(!c.has("articles-list").await.unwrap());

    let deps = [
        dep::id("article", 1),
        dep::id("article", 2),
        dep::id("author", 1),
    ];
    c.put("articles-list", &articles(), deps, MINUTE)
        .await
        .unwrap();
    assert!(c.has("articles-list").await.unwrap());
    assert_eq!(
        c.get::<Vec<Article>>("articles-list").await.unwrap(),
        Some(articles())
    );

    assert!(c.delete("articles-list").await.unwrap());
    assert!(!c.delete("articles-list").await.unwrap());
    assert!(!c.has("articles-list").await.unwrap());
    assert_eq!(c.get::<Vec<Article>>("articles-list").await.unwrap(), None);

    let stats = c.stats();
    assert_eq!((stats.hits, stats.misses, stats.puts), (1, 2, 1));
}

async fn values_of_every_kind(h: Harness) {
    let c = &h.cache;
    c.put("s", "plain text", [], MINUTE).await.unwrap();
    c.put("n", &42u64, [], MINUTE).await.unwrap();
    c.put("b", &true, [], MINUTE).await.unwrap();
    c.put("o", &Some(1.5f64), [], MINUTE).await.unwrap();
    c.put("none", &None::<u8>, [], MINUTE).await.unwrap();
    c.put("unit", &(), [], MINUTE).await.unwrap();
    assert_eq!(
        c.get::<String>("s").await.unwrap().as_deref(),
        Some("plain text")
    );
    assert_eq!(c.get::<u64>("n").await.unwrap(), Some(42));
    assert_eq!(c.get::<bool>("b").await.unwrap(), Some(true));
    assert_eq!(c.get::<Option<f64>>("o").await.unwrap(), Some(Some(1.5)));
    // A stored `null` is a hit holding `None`, not a miss.
    assert_eq!(c.get::<Option<u8>>("none").await.unwrap(), Some(None));
    assert_eq!(c.get::<()>("unit").await.unwrap(), Some(()));

    // Values that serialize as a JSON string are stored as text and must come back as the
    // type that wrote them (these once failed to decode, so read-through never hit).
    c.put("some-str", &Some("x".to_owned()), [], MINUTE)
        .await
        .unwrap();
    c.put("name", &Name("x".into()), [], MINUTE).await.unwrap();
    c.put("variant", &Shape::Circle, [], MINUTE).await.unwrap();
    c.put("newtype-variant", &Shape::Label("x".into()), [], MINUTE)
        .await
        .unwrap();
    c.put("json-looking", "[1,2]", [], MINUTE).await.unwrap();
    assert_eq!(
        c.get::<Option<String>>("some-str").await.unwrap(),
        Some(Some("x".to_owned()))
    );
    assert_eq!(c.get::<Name>("name").await.unwrap(), Some(Name("x".into())));
    assert_eq!(
        c.get::<Option<Name>>("name").await.unwrap(),
        Some(Some(Name("x".into())))
    );
    assert_eq!(
        c.get::<Shape>("variant").await.unwrap(),
        Some(Shape::Circle)
    );
    assert_eq!(
        c.get::<Shape>("newtype-variant").await.unwrap(),
        Some(Shape::Label("x".into()))
    );
    assert_eq!(
        c.get::<String>("json-looking").await.unwrap().as_deref(),
        Some("[1,2]")
    );
    let before = c.stats().computations;
    let name: Name = c
        .get_or_compute("name", MINUTE, || async {
            Ok::<_, std::io::Error>((Name("computed".into()), []))
        })
        .await
        .unwrap();
    assert_eq!((name, c.stats().computations), (Name("x".into()), before));
    assert_eq!(c.stats().faults, 0);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Name(String);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle,
    Label(String),
}

async fn get_many_in_key_order(h: Harness) {
    let c = &h.cache;
    for (key, value) in [("a", 1u32), ("c", 3), ("d", 4)] {
        c.put(key, &value, [dep::tag("t")], MINUTE).await.unwrap();
    }
    let keys = vec![
        "d".to_owned(),
        "b".to_owned(),
        "a".to_owned(),
        "a".to_owned(),
        "c".to_owned(),
    ];
    let found: Vec<Option<u32>> = c.get_many(&keys).await.unwrap();
    assert_eq!(found, [Some(4), None, Some(1), Some(1), Some(3)]);
    let none: Vec<Option<u32>> = c.get_many(Vec::<String>::new()).await.unwrap();
    assert!(none.is_empty());
    let stats = c.stats();
    assert_eq!((stats.hits, stats.misses), (4, 1));
    // One value of another type fails the call, as get does.
    c.put("s", "text", [], MINUTE).await.unwrap();
    assert!(matches!(
        c.get_many::<u32>(["a", "s"]).await,
        Err(Error::Decode { .. })
    ));
    c.invalidate([dep::tag("t")]).await.unwrap();
    let gone: Vec<Option<u32>> = c.get_many(["a", "c", "d"]).await.unwrap();
    assert_eq!(gone, [None, None, None]);
}

async fn wrong_type_is_an_error_not_a_panic(h: Harness) {
    let c = &h.cache;
    c.put("k", &articles(), [], MINUTE).await.unwrap();
    let err = c.get::<u32>("k").await.unwrap_err();
    assert!(
        matches!(err, Error::Decode { ref key, .. } if key == "k"),
        "{err}"
    );
    c.put("s", "text", [], MINUTE).await.unwrap();
    assert!(matches!(
        c.get::<Vec<u8>>("s").await,
        Err(Error::Decode { .. })
    ));
    assert_eq!(c.stats().errors, 2);
}

async fn one_ttl_rule_on_every_backend(h: Harness) {
    let c = &h.cache;
    for bad in [
        Duration::ZERO,
        MAX_TTL + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        let err = c.put("k", &1, [], bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidTtl { ttl } if ttl == bad) && !err.is_transient(),
            "{err}"
        );
        let ticket = c.ticket().await.unwrap();
        let err = c.put_fenced("k", &1, [], bad, &ticket).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");
        assert!(!c.has("k").await.unwrap());
    }
    // Sub-millisecond TTLs are not zero: they round up. The longest TTL is accepted.
    c.put("k", &1, [], Duration::from_micros(10)).await.unwrap();
    c.put("long", &1, [], MAX_TTL).await.unwrap();
    assert_eq!(c.get::<u32>("long").await.unwrap(), Some(1));

    // get_or_compute refuses a zero TTL like put: counted as a fault, the value returned
    // but not stored.
    let faults = c.stats().faults;
    for _ in 0..2 {
        let v: u32 = c
            .get_or_compute("zero", Duration::ZERO, || async {
                Ok::<_, std::io::Error>((7, [dep::tag("z")]))
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
    assert_eq!(c.stats().faults, faults + 2);
    assert!(!c.has("zero").await.unwrap());
}

/// A key is copied into every dependency's index (which has no TTL): writes refuse keys over
/// `MAX_KEY_LEN` instead of letting one request pin memory at key length times dependencies.
async fn one_key_length_rule_on_every_backend(h: Harness) {
    let c = &h.cache;
    let deps: Vec<_> = (0..50).map(|i| dep::id("article", i)).collect();
    let longest = "k".repeat(MAX_KEY_LEN);
    c.put(&longest, &1, deps.clone(), MINUTE).await.unwrap();
    assert_eq!(c.get::<u32>(&longest).await.unwrap(), Some(1));

    let long = "k".repeat(100_000);
    let err = c.put(&long, &1, deps.clone(), MINUTE).await.unwrap_err();
    assert!(
        matches!(&err, Error::KeyTooLong { length: 100_000, head } if head.len() == 64)
            && !err.is_transient(),
        "{err}"
    );
    assert!(err.to_string().len() < 300, "the error is bounded: {err}");
    let ticket = c.ticket().await.unwrap();
    let err = c
        .put_fenced(&long, &1, deps.clone(), MINUTE, &ticket)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyTooLong { .. }), "{err}");
    // get_or_compute computes, counts a fault, stores nothing.
    let faults = c.stats().faults;
    let v: u32 = c
        .get_or_compute(&long, MINUTE, || async {
            Ok::<_, std::io::Error>((7, deps.clone()))
        })
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(c.stats().faults, faults + 1);
    assert!(!c.has(&long).await.unwrap());
    // Only the entry of the longest accepted key depends on the articles.
    assert_eq!(c.invalidate(&deps).await.unwrap(), 1);
}

/// `ttl_jitter` spreads the TTLs entries are stored with, within the fraction, through
/// `put` and `get_or_compute` alike; a fraction outside `0..1` is a configuration error.
async fn ttl_jitter_spreads_what_is_stored(h: Harness) {
    for bad in [-0.1, 1.0, f64::NAN] {
        let err = h.other_builder().await.ttl_jitter(bad).build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{bad}: {err}");
    }
    let c = h.other_builder().await.ttl_jitter(0.5).build().unwrap();
    let ttl = Duration::from_secs(100);
    for i in 0..40 {
        if i % 2 == 0 {
            c.put(&format!("j{i}"), &i, [], ttl).await.unwrap();
        } else {
            let _: u32 = c
                .get_or_compute(&format!("j{i}"), ttl, || async move {
                    Ok::<_, std::io::Error>((i, [dep::tag("j")]))
                })
                .await
                .unwrap();
        }
    }
    let stored: Vec<Duration> = match &h.kind {
        support::Kind::Memory(backend) => (0..40)
            .map(|i| backend.stored_ttl(&format!("j{i}")).unwrap())
            .collect(),
        support::Kind::Redis { .. } => {
            let mut connection = h.connections().remove(0);
            h.redis_keys()
                .iter()
                .filter(|key| key.contains(":d:j"))
                .map(|key| {
                    let ms: u64 = ::redis::cmd("PTTL")
                        .arg(key)
                        .query(&mut connection)
                        .unwrap();
                    Duration::from_millis(ms)
                })
                .collect()
        }
        // The cluster run checks the spread on one server.
        support::Kind::Cluster { .. } => return,
    };
    assert_eq!(stored.len(), 40);
    assert!(
        stored
            .iter()
            .all(|t| *t >= Duration::from_secs(49) && *t <= Duration::from_secs(150)),
        "{stored:?}"
    );
    let below = stored
        .iter()
        .filter(|t| **t < Duration::from_secs(95))
        .count();
    let above = stored
        .iter()
        .filter(|t| **t > Duration::from_secs(105))
        .count();
    assert!(below > 0 && above > 0, "not spread: {stored:?}");
}

async fn unlimited_durations_do_not_panic(h: Harness) {
    let c = h.with_unlimited_durations().await;
    c.put("k", "v", [dep::tag("t")], MINUTE).await.unwrap();
    assert_eq!(c.invalidate([dep::tag("t")]).await.unwrap(), 1);
    let v: String = c
        .get_or_compute("k", MINUTE, || async {
            Ok::<_, std::io::Error>(("computed".to_owned(), [dep::tag("t")]))
        })
        .await
        .unwrap();
    assert_eq!(v, "computed");
    assert_eq!(
        c.get::<String>("k").await.unwrap().as_deref(),
        Some("computed")
    );
    let ticket = c.ticket().await.unwrap();
    assert!(c
        .put_fenced("f", "v", [dep::tag("t")], MINUTE, &ticket)
        .await
        .unwrap());
    c.prune().await.unwrap();
    assert_eq!(c.invalidate([dep::tag("t")]).await.unwrap(), 2);
}

async fn entries_expire(h: Harness) {
    let c = &h.cache;
    c.put("short", "x", [dep::tag("t")], Duration::from_millis(100))
        .await
        .unwrap();
    c.put("long", "y", [dep::tag("t")], MINUTE).await.unwrap();
    // Generous margin: the assertion is only that it is gone *eventually*.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!c.has("short").await.unwrap());
    assert_eq!(c.get::<String>("short").await.unwrap(), None);
    assert!(c.has("long").await.unwrap());
    // Invalidation after expiry counts only the live entry.
    assert_eq!(c.invalidate([dep::tag("t")]).await.unwrap(), 1);
}

async fn arbitrary_utf8_keys_and_deps(h: Harness) {
    let c = &h.cache;
    let keys = [
        "",
        "статья:1",
        "🪆🪆",
        "a:b::c",
        "{tag}",
        "}{",
        "*",
        "?[x]",
        r"back\slash",
        "line\nbreak",
        "%7B",
        "data::k",
        "d:x",
        "r:id:article:1",
    ];
    for (i, key) in keys.iter().enumerate() {
        let deps = [
            dep::id("статья", key),
            dep::tag(key),
            dep::ntag("ns:{}", "*\\"),
        ];
        c.put(key, &i, deps, MINUTE).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.get::<usize>(key).await.unwrap(), Some(i), "key {key:?}");
        let mut deps = c.deps(key).await.unwrap().unwrap();
        deps.sort();
        let mut expected = vec![
            dep::id("статья", key),
            dep::tag(key),
            dep::ntag("ns:{}", "*\\"),
        ];
        expected.sort();
        assert_eq!(deps, expected, "deps of {key:?}");
    }
    // Each key has its own id and tag dependency; dropping one drops exactly that key.
    assert_eq!(c.invalidate([dep::tag("{tag}")]).await.unwrap(), 1);
    assert!(!c.has("{tag}").await.unwrap());
    assert!(c.has("}{").await.unwrap());
    assert_eq!(c.invalidate([dep::id("статья", "🪆🪆")]).await.unwrap(), 1);
    assert_eq!(
        c.invalidate([dep::ntag("ns:{}", "*\\")]).await.unwrap(),
        keys.len() as u64 - 2
    );
}

async fn large_values(h: Harness) {
    let big: String = "абв🪆".repeat(5 * 1024 * 1024 / 10 + 1); // a little over 5 MB
    assert!(big.len() > 5 * 1024 * 1024);
    h.cache
        .put("big", &big, [dep::tag("big")], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        h.cache.get::<String>("big").await.unwrap().as_ref(),
        Some(&big)
    );
    let bytes: Vec<u32> = (0..1_500_000).collect(); // about 12 MB of JSON
    h.cache
        .put("json", &bytes, [dep::tag("big")], MINUTE)
        .await
        .unwrap();
    assert_eq!(h.cache.get::<Vec<u32>>("json").await.unwrap(), Some(bytes));
    assert_eq!(h.cache.invalidate([dep::tag("big")]).await.unwrap(), 2);
}

async fn clones_and_other_clients_share_entries(h: Harness) {
    let other = h.other_client().await;
    let clone = h.cache.clone();
    h.cache
        .put("k", "v", [dep::tag("t")], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        other.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(
        clone.get::<String>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(other.invalidate([dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(h.cache.get::<String>("k").await.unwrap(), None);
    // Counters are per cache value, shared by its clones.
    assert_eq!(clone.stats().hits, 1);
}

backend_tests!(
    put_get_has_delete,
    get_many_in_key_order,
    values_of_every_kind,
    wrong_type_is_an_error_not_a_panic,
    one_ttl_rule_on_every_backend,
    one_key_length_rule_on_every_backend,
    ttl_jitter_spreads_what_is_stored,
    unlimited_durations_do_not_panic,
    entries_expire,
    arbitrary_utf8_keys_and_deps,
    large_values,
    clones_and_other_clients_share_entries,
);

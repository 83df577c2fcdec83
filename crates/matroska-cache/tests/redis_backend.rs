//! What only the Redis backend has: URLs and credentials, the server's eviction policy, a
//! small `maxmemory`, connection loss, tenant isolation and the key layout.

mod support;

use std::time::Duration;

use matroska_cache::backend::redis::StoredEntry;
use matroska_cache::{dep, Error, MatroskaCache, RedisBackend};
use matroska_test_support::RedisServer;
use redis::Commands;

const MINUTE: Duration = Duration::from_secs(60);

/// Guards against hangs: an operation that should fail or succeed promptly gets this long.
async fn promptly<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("hung instead of answering")
}

#[tokio::test]
async fn acl_user_and_password_urls_work_and_bad_ones_fail_promptly() {
    let acl = RedisServer::builder().acl_user("app", "s3cret:/@").start();
    let url = format!(
        "redis://app:{}@127.0.0.1:{}/",
        "s3cret%3A%2F%40",
        acl.port()
    );
    let cache = MatroskaCache::redis(&url, "p").await.unwrap();
    cache.put("k", "v", [dep::tag("t")], MINUTE).await.unwrap();
    assert_eq!(cache.invalidate([dep::tag("t")]).await.unwrap(), 1);

    let wrong = format!("redis://app:nope@127.0.0.1:{}/", acl.port());
    let err = promptly(MatroskaCache::redis(&wrong, "p"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redis(_)), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the password leaked into {err}"
    );

    let pass = RedisServer::builder().password("pw").start();
    let cache = MatroskaCache::redis(&pass.url(), "p").await.unwrap();
    assert!(!cache.has("k").await.unwrap());
    let without = format!("redis://127.0.0.1:{}/", pass.port());
    assert!(promptly(MatroskaCache::redis(&without, "p")).await.is_err());
}

#[tokio::test]
async fn malformed_url_unreachable_server_and_empty_prefix_are_clear_errors() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1/",
        "redis://127.0.0.1:99999/",
    ] {
        let err = promptly(MatroskaCache::redis(url, "p")).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidUrl(_)) && !err.is_transient(),
            "{url:?}: {err}"
        );
    }
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = promptly(MatroskaCache::redis(
        &format!("redis://127.0.0.1:{port}/"),
        "p",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err}");

    let server = RedisServer::start();
    let err = MatroskaCache::redis(&server.url(), "").await.unwrap_err();
    assert!(matches!(err, Error::EmptyPrefix), "{err}");
    let err = RedisBackend::builder(&server.url(), "p")
        .batch_size(0)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn allkeys_eviction_policies_are_refused_with_the_fix() {
    for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
        let server = RedisServer::builder()
            .config("maxmemory-policy", policy)
            .start();
        let err = MatroskaCache::redis(&server.url(), "p").await.unwrap_err();
        assert!(
            matches!(err, Error::UnsafeEvictionPolicy { .. }) && !err.is_transient(),
            "{err}"
        );
        assert!(
            err.to_string().contains("volatile-lru"),
            "the message names the fix: {err}"
        );
        // Whoever checked the policy by other means can skip the check.
        RedisBackend::builder(&server.url(), "p")
            .assume_safe_eviction_policy()
            .build()
            .await
            .unwrap();
    }
    for policy in [
        "noeviction",
        "volatile-lru",
        "volatile-lfu",
        "volatile-ttl",
        "volatile-random",
    ] {
        let server = RedisServer::builder()
            .config("maxmemory-policy", policy)
            .start();
        MatroskaCache::redis(&server.url(), "p").await.unwrap();
    }
}

/// Issue 20, item 10: the eviction policy is read from `INFO memory`, so the cache's user
/// needs no `CONFIG GET` (which would also read `requirepass` and `masterauth`); an unsafe
/// policy is still refused for such a user.
#[tokio::test]
async fn a_user_without_config_rights_is_checked_all_the_same() {
    for (policy, safe) in [("volatile-lru", true), ("allkeys-lru", false)] {
        let server = RedisServer::builder()
            .acl_user("app", "pw")
            .config("maxmemory-policy", policy)
            .start();
        server.acl_setuser("app", "-config");
        match MatroskaCache::redis(&server.url(), "p").await {
            Ok(cache) => {
                assert!(safe, "{policy} accepted");
                cache.put("k", &1, [dep::tag("t")], MINUTE).await.unwrap();
                assert_eq!(cache.get::<i32>("k").await.unwrap(), Some(1));
            }
            Err(err) => {
                assert!(!safe, "{policy}: {err}");
                assert!(
                    matches!(err, Error::UnsafeEvictionPolicy { .. }),
                    "{policy}: {err}"
                );
            }
        }
    }
}

/// Under a volatile policy and memory pressure Redis evicts entries, never an index, so no
/// invalidation is lost.
#[tokio::test]
async fn small_maxmemory_evicts_entries_but_never_an_index() {
    let server = RedisServer::builder()
        .config("maxmemory", "4mb")
        .config("maxmemory-policy", "volatile-lru")
        .start();
    let cache = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    let value = "x".repeat(2_000);
    let n = 5_000u32; // about 10 MB of values into 4 MB
    for i in 0..n {
        let deps = [
            dep::tag("all"),
            dep::id("item", i),
            dep::tag(&format!("g{}", i % 7)),
        ];
        cache
            .put(&format!("k{i}"), &value, deps, MINUTE)
            .await
            .unwrap();
    }
    let mut conn = server.connection();
    let evicted: u64 = {
        let info: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("evicted_keys:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(evicted > 0, "the test must put Redis under memory pressure");
    // Every index key is still there and has no TTL.
    let indexes: Vec<String> = conn.keys("{p}:r:*").unwrap();
    assert_eq!(indexes.len(), 1 + n as usize + 7);
    for index in indexes.iter().take(50) {
        assert_eq!(conn.pttl::<_, i64>(index).unwrap(), -1, "{index} has a TTL");
    }
    // Every live entry is still reachable from the index, under its own generation...
    let live: Vec<String> = conn.keys("{p}:d:*").unwrap();
    assert!(!live.is_empty());
    for entry in &live {
        let key = entry.strip_prefix("{p}:d:").unwrap();
        let stored: Option<Vec<u8>> = conn.get(entry).unwrap();
        let Some(stored) = stored else {
            continue;
        }; // evicted meanwhile
        let generation = StoredEntry::parse(key, &stored).unwrap().generation;
        let member: Option<u64> = conn.hget("{p}:r:tag:all", key).unwrap();
        assert_eq!(member, Some(generation), "{entry} is not indexed");
    }
    // ...so invalidation drops all of them (Redis may evict a few more meanwhile).
    let dropped = cache.invalidate([dep::tag("all")]).await.unwrap();
    assert!(
        dropped > 0 && dropped <= live.len() as u64,
        "{dropped} of {}",
        live.len()
    );
    let left: Vec<String> = conn.keys("{p}:d:*").unwrap();
    assert!(left.is_empty(), "{} entries survived", left.len());
}

/// Under `noeviction` a full Redis refuses the write: `put` fails with an error and leaves no
/// half-written entry.
#[tokio::test]
async fn a_full_noeviction_server_fails_puts_cleanly() {
    let server = RedisServer::builder()
        .config("maxmemory", "3mb")
        .config("maxmemory-policy", "noeviction")
        .start();
    let cache = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    let value = "x".repeat(10_000);
    let mut failed = None;
    for i in 0..2_000u32 {
        if let Err(e) = cache
            .put(&format!("k{i}"), &value, [dep::tag("all")], MINUTE)
            .await
        {
            failed = Some((i, e));
            break;
        }
    }
    let (i, err) = failed.expect("a 3 MB server cannot take 20 MB");
    assert!(matches!(err, Error::Redis(_)), "{err}");
    assert!(err.to_string().contains("OOM"), "{err}");
    assert!(!cache.has(&format!("k{i}")).await.unwrap());
    // Invalidation still works on the full server (it frees memory), and every stored entry
    // was in the index.
    assert_eq!(
        cache.invalidate([dep::tag("all")]).await.unwrap(),
        u64::from(i)
    );
    cache
        .put("after", &value, [dep::tag("all")], MINUTE)
        .await
        .unwrap();
}

#[tokio::test]
async fn connection_loss_fails_promptly_and_recovers() {
    let mut server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_millis(500))
            .build()
            .await
            .unwrap(),
    );
    cache.put("k", "v", [dep::tag("t")], MINUTE).await.unwrap();

    server.kill();
    let err = promptly(cache.get::<String>("k")).await.unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err}");
    assert!(err.is_transient(), "connection loss is transient: {err:?}");
    let err = promptly(cache.get_many::<String>(["k"])).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(promptly(cache.invalidate([dep::tag("t")])).await.is_err());

    server.restart(); // an empty server: it keeps nothing on disk
    let mut recovered = false;
    for _ in 0..100 {
        if let Ok(None) = cache.get::<String>("k").await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the connection did not come back");
    cache
        .put("k", "again", [dep::tag("t")], MINUTE)
        .await
        .unwrap();
    assert_eq!(cache.invalidate([dep::tag("t")]).await.unwrap(), 1);

    // A killed client connection: at most the next call fails, then it reconnects.
    let mut admin = server.connection();
    let _: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .unwrap();
    let _ = cache.has("k").await;
    let mut ok = false;
    for _ in 0..100 {
        if cache.put("k", "3", [dep::tag("t")], MINUTE).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no recovery after CLIENT KILL");
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("3")
    );
}

/// A script that keeps the server busy for a second.
const BUSY_FOR_A_SECOND: &str = "local function now() local t = redis.call('TIME') \
     return t[1] * 1000000 + t[2] end \
     local done = now() + 1000000 while now() < done do end";

/// The builder's `timeout` is what bounds a request, above redis-rs's default response
/// timeout (500 ms) as well as below it: a server busy for a second answers a cache that
/// waits 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_within_the_timeout_is_waited_for() {
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap(),
    );
    cache.put("k", "v", [dep::tag("t")], MINUTE).await.unwrap();
    cache.put("k2", "v", [dep::tag("u")], MINUTE).await.unwrap();
    let busy = {
        let mut admin = server.connection();
        std::thread::spawn(move || {
            // Busy for a second: the server serves one command at a time.
            let _: () = redis::cmd("EVAL")
                .arg(BUSY_FOR_A_SECOND)
                .arg(0)
                .query(&mut admin)
                .unwrap();
        })
    };
    // Sent while the script runs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (got, dropped) = promptly(async {
        tokio::join!(cache.get::<String>("k"), cache.invalidate([dep::tag("u")]))
    })
    .await;
    busy.join().unwrap();
    assert_eq!(got.unwrap().as_deref(), Some("v"));
    assert_eq!(dropped.unwrap(), 1);
}

#[tokio::test]
async fn prefixes_isolate_tenants_completely() {
    let server = RedisServer::start();
    let prefixes = ["a", "a::data", "a:d", "a}", "{a}", "a%7D", "a*", "тенант"];
    let mut caches = vec![];
    for p in prefixes {
        caches.push(MatroskaCache::redis(&server.url(), p).await.unwrap());
    }
    // Every tenant writes the keys and deps that could alias another tenant's.
    let keys = ["k", "data::k", "d:k", ":d:k", "}:d:k", "r:tag:t"];
    for (t, cache) in caches.iter().enumerate() {
        for key in keys {
            cache
                .put(key, &t, [dep::tag("t"), dep::tag(key)], MINUTE)
                .await
                .unwrap();
        }
    }
    for (t, cache) in caches.iter().enumerate() {
        for key in keys {
            assert_eq!(
                cache.get::<usize>(key).await.unwrap(),
                Some(t),
                "{:?} {key:?}",
                prefixes[t]
            );
        }
    }
    // One tenant invalidates and deletes everything it has; the others keep theirs.
    assert_eq!(
        caches[0].invalidate([dep::tag("t")]).await.unwrap(),
        keys.len() as u64
    );
    for cache in &caches[1..] {
        for key in keys {
            assert!(cache.has(key).await.unwrap());
        }
        assert!(!caches[0].delete("k").await.unwrap());
    }
    assert_eq!(
        caches[1].invalidate([dep::tag("t")]).await.unwrap(),
        keys.len() as u64
    );
    assert!(caches[2].has("k").await.unwrap());
}

/// The layout the README documents, readable with redis-cli.
#[tokio::test]
async fn storage_layout_is_readable() {
    let server = RedisServer::start();
    let cache = MatroskaCache::redis(&server.url(), "cache").await.unwrap();
    cache
        .put("greeting", "hello", [dep::id("article", 1)], MINUTE)
        .await
        .unwrap();
    cache
        .put(
            "list",
            &[1, 2],
            [dep::id("article", 1), dep::tag("home")],
            MINUTE,
        )
        .await
        .unwrap();
    let mut conn = server.connection();
    // Generation (20 digits), format tag, length of the dependency list (10 digits), the
    // list, the value.
    let greeting: String = conn.get("{cache}:d:greeting").unwrap();
    assert_eq!(&greeting[20..], r#"s0000000016["id:article:1"]hello"#);
    let list: String = conn.get("{cache}:d:list").unwrap();
    assert_eq!(
        &list[20..],
        r#"j0000000027["id:article:1","tag:home"][1,2]"#
    );
    let entry = StoredEntry::parse("list", list.as_bytes()).unwrap();
    assert_eq!(entry.generation, list[..20].parse::<u64>().unwrap());
    assert_eq!(entry.value, b"[1,2]");
    let ttl: i64 = conn.pttl("{cache}:d:list").unwrap();
    assert!(ttl > 0 && ttl <= 60_000);
    let members: Vec<String> = conn.hkeys("{cache}:r:id:article:1").unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(conn.pttl::<_, i64>("{cache}:r:id:article:1").unwrap(), -1);
}

/// Whatever another program wrote under the prefix reads as `Error::Corrupt`, never a
/// panic; `deps` of a large entry reads its dependency list without the value.
#[tokio::test]
async fn damaged_entries_are_errors_and_deps_skip_the_value() {
    let server = RedisServer::start();
    let cache = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    let big = "x".repeat(4 << 20);
    cache
        .put("big", &big, [dep::id("page", 1), dep::tag("home")], MINUTE)
        .await
        .unwrap();
    assert_eq!(
        cache.deps("big").await.unwrap().unwrap(),
        [dep::id("page", 1), dep::tag("home")]
    );
    assert_eq!(
        cache.get::<String>("big").await.unwrap().unwrap().len(),
        big.len()
    );
    assert_eq!(cache.deps("missing").await.unwrap(), None);

    let mut conn = server.connection();
    for (key, raw) in [
        ("empty", ""),
        ("short", "123"),
        ("bad-tag", "00000000000000000001x0000000000"),
        ("bad-len", "00000000000000000001s00000000zz[]"),
        ("long-len", "00000000000000000001s0000000099[]"),
    ] {
        let _: () = conn.set(format!("{{p}}:d:{key}"), raw).unwrap();
        let get = cache.get::<String>(key).await;
        assert!(
            matches!(get, Err(Error::Corrupt { .. })),
            "get {key}: {get:?}"
        );
        let deps = cache.deps(key).await;
        assert!(
            matches!(deps, Err(Error::Corrupt { .. })),
            "deps {key}: {deps:?}"
        );
    }
}

/// After a concurrent workload every entry is reachable from each of its dependencies' index
/// with its own generation: put never leaves an entry without its index members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_indexed_under_its_generation() {
    let server = RedisServer::start();
    let mut tasks = vec![];
    for t in 0..6u64 {
        let cache = MatroskaCache::redis(&server.url(), "p").await.unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..400u64 {
                let key = format!("k{}", (i * 7 + t) % 30);
                let deps = [dep::id("a", i % 5), dep::tag(&format!("t{}", (i + t) % 4))];
                cache.put(&key, &i, deps, MINUTE).await.unwrap();
                if i % 9 == 0 {
                    cache.invalidate([dep::id("a", (i + t) % 5)]).await.unwrap();
                }
                if i % 13 == 0 {
                    cache.delete(&format!("k{}", i % 30)).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = server.connection();
    let entries: Vec<String> = conn.keys("{p}:d:*").unwrap();
    assert!(!entries.is_empty());
    for entry in entries {
        let stored: Vec<u8> = conn.get(&entry).unwrap();
        let key = entry.strip_prefix("{p}:d:").unwrap();
        let stored = StoredEntry::parse(key, &stored).unwrap();
        for dep in serde_json::from_str::<Vec<String>>(stored.deps_json).unwrap() {
            let member: Option<u64> = conn.hget(format!("{{p}}:r:{dep}"), key).unwrap();
            assert_eq!(member, Some(stored.generation), "{entry} under {dep}");
        }
    }
}

/// The background prune reclaims garbage without anyone calling `prune`, and stops with the
/// last clone of the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_prune_reclaims_garbage() {
    let server = RedisServer::start();
    // The garbage is made by a cache that does not prune...
    let writer = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    for i in 0..300u32 {
        writer
            .put(
                &format!("k{i}"),
                &i,
                [dep::tag("all"), dep::id("i", i)],
                MINUTE,
            )
            .await
            .unwrap();
    }
    for i in 0..200u32 {
        writer.delete(&format!("k{i}")).await.unwrap();
    }
    let mut conn = server.connection();
    let members = |conn: &mut redis::Connection| -> u64 {
        let keys: Vec<String> = conn.keys("{p}:r:*").unwrap();
        keys.iter().map(|k| conn.hlen::<_, u64>(k).unwrap()).sum()
    };
    assert_eq!(members(&mut conn), 600);
    // ...and reclaimed by one that does, without anyone calling prune.
    let backend = RedisBackend::builder(&server.url(), "p")
        .auto_prune(Some(Duration::from_millis(200)))
        .build()
        .await
        .unwrap();
    let cache = MatroskaCache::new(backend);
    let mut reclaimed = false;
    for _ in 0..100 {
        if members(&mut conn) == 200 {
            reclaimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reclaimed, "{} members left", members(&mut conn));
    // While it runs, it takes the lock (with the interval as TTL) every interval.
    let mut locked = false;
    for _ in 0..50 {
        if conn.exists("{p}:p").unwrap() {
            locked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(locked);
    // With the cache gone the task stops: the lock is never taken again.
    drop(cache);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _: () = conn.del("{p}:p").unwrap();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let taken: bool = conn.exists("{p}:p").unwrap();
        assert!(!taken, "the pruner outlived the cache");
    }
}

/// A prune run with a short ticket age (as `matroska prune` with its default) must not let a
/// fenced put of an application with a longer `max_ticket_age` pass a mark it still needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_with_a_shorter_ticket_age_keeps_the_marks_others_need() {
    let server = RedisServer::start();
    let app = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .max_ticket_age(Duration::from_secs(3600))
            .build()
            .await
            .unwrap(),
    );
    let operator = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .max_ticket_age(Duration::from_millis(1))
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    let ticket = app.ticket().await.unwrap();
    app.invalidate([dep::id("article", 1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    operator.prune().await.unwrap();
    let stored = app
        .put_fenced("page", "old", [dep::id("article", 1)], MINUTE, &ticket)
        .await
        .unwrap();
    assert!(
        !stored,
        "the prune forgot the invalidation the ticket predates"
    );
}

/// Two processes' caches of `prefix` split into 16 shards on one server, without the
/// background prune, once the directory repair each runs at start (a fresh server's shards
/// all begin their first epoch) has cleared every shard's "incomplete" mark.
async fn two_sharded_processes(
    server: &RedisServer,
    prefix: &str,
) -> (MatroskaCache, MatroskaCache) {
    let build = || {
        RedisBackend::builder(&server.url(), prefix)
            .shards(16)
            .auto_prune(None)
            .build()
    };
    let caches = (
        MatroskaCache::new(build().await.unwrap()),
        MatroskaCache::new(build().await.unwrap()),
    );
    let mut redis = server.connection();
    for _ in 0..100 {
        let marks: Vec<String> = redis.keys(format!("{{{prefix}#*}}:i")).unwrap();
        if marks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other process's pass may still be finishing: it found the marks too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    caches
}

/// A sharded cache (here 16 shards on one server) registers an entry's shard at each
/// dependency's home once per process: a warm put sends no `SETBIT`. When a home loses a
/// directory bit (simulated: the bit deleted, the home marked incomplete as a new epoch
/// marks it) and another process repairs the directories, the first process's next put
/// is refused for its old directory version, registers again, and the invalidation finds
/// the entry. Without the version check that put would skip its registration and the entry
/// would outlive the invalidation of its dependency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_registration_is_renewed_after_a_directory_repair() {
    let server = RedisServer::start();
    let (a, b) = two_sharded_processes(&server, "reg").await;
    let mut redis = server.connection();
    let tag_of = |key: &str| key[..=key.find('}').unwrap()].to_owned();
    let one_key = |redis: &mut redis::Connection, pattern: String| -> String {
        let mut keys: Vec<String> = redis.keys(&pattern).unwrap();
        assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
        keys.pop().unwrap()
    };
    // An entry whose dependency is homed in another shard than the entry.
    let mut found = None;
    for i in 0..100 {
        let (key, d) = (format!("k{i}"), dep::id("article", i));
        a.put(&key, "v1", [d.clone()], MINUTE).await.unwrap();
        let entry = one_key(&mut redis, format!("*}}:d:{key}"));
        let directory = one_key(&mut redis, format!("*}}:h:{d}"));
        if tag_of(&entry) != tag_of(&directory) {
            found = Some((key, d, directory));
            break;
        }
    }
    let (key, d, directory) = found.expect("a dependency homed elsewhere");
    let home = tag_of(&directory);

    // A warm put registers nothing, once the repair pass every new cache runs at start (it
    // renews the directory versions, so the next put registers again) is over.
    let mut warm = false;
    for _ in 0..50 {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut redis)
            .unwrap();
        a.put(&key, "v1", [d.clone()], MINUTE).await.unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut redis)
            .unwrap();
        if !stats.contains("cmdstat_setbit") {
            warm = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(warm, "every put registered again");

    // The entry and d's index slice go (as after an expiry and a prune, but without a prune
    // pass: its directory pruning would renew the version as well), so nothing left in the
    // index names the entry's shard for d.
    let entry = one_key(&mut redis, format!("*}}:d:{key}"));
    let slice = entry.replacen(&format!("}}:d:{key}"), &format!("}}:r:{d}"), 1);
    let removed: u64 = redis.del(&[&entry, &slice]).unwrap();
    assert_eq!(removed, 2);
    // The home loses d's directory and marks itself incomplete, as a new epoch would; the
    // next prune (another process) repairs it, from index slices that no longer hold d.
    let _: () = redis.del(&directory).unwrap();
    let _: () = redis.set(format!("{home}:i"), "1").unwrap();
    b.prune().await.unwrap();
    let incomplete: bool = redis.exists(format!("{home}:i")).unwrap();
    assert!(!incomplete, "the repair pass ran");
    let rebuilt: bool = redis.exists(&directory).unwrap();
    assert!(!rebuilt, "nothing should have named the entry's shard");

    // The first process still remembers its registration, under the old version.
    a.put(&key, "v2", [d.clone()], MINUTE).await.unwrap();
    assert_eq!(b.invalidate([d]).await.unwrap(), 1);
    assert_eq!(a.get::<String>(&key).await.unwrap(), None);
}

/// A sharded cache prunes the directories of dependencies nobody depends on any more. A
/// process that remembers having registered there registers again on its next put (the prune
/// renewed the directory versions), so invalidations still find its entries; a tombstone left
/// by a pass that stopped half-way is still read by invalidations, and merged back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_directories_are_pruned_and_remembered_registrations_renewed() {
    let server = RedisServer::start();
    let (a, b) = two_sharded_processes(&server, "dirs").await;
    let mut redis = server.connection();
    let keys = |redis: &mut redis::Connection, kind: &str| -> Vec<String> {
        redis.keys(format!("{{dirs#*}}:{kind}:*")).unwrap()
    };
    for i in 0..50u64 {
        a.put(&format!("k{i}"), "v", [dep::id("article", i)], MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(keys(&mut redis, "h").len(), 50);
    // Nothing to prune while the entries live.
    assert_eq!(b.prune().await.unwrap().directories, 0);
    assert_eq!(keys(&mut redis, "h").len(), 50);

    for i in 0..25u64 {
        assert!(b.delete(&format!("k{i}")).await.unwrap());
    }
    let report = b.prune().await.unwrap();
    assert_eq!((report.removed, report.directories), (25, 25), "{report:?}");
    assert_eq!(keys(&mut redis, "h").len(), 25);
    assert!(keys(&mut redis, "t").is_empty());

    // `a` still remembers its registrations of article:0..25.
    for i in 0..25u64 {
        a.put(&format!("k{i}"), "v2", [dep::id("article", i)], MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(keys(&mut redis, "h").len(), 50);
    for i in 0..25u64 {
        assert_eq!(
            b.invalidate([dep::id("article", i)]).await.unwrap(),
            1,
            "article:{i}"
        );
    }

    // A tombstone (a pass stopped between its steps) is read by invalidations...
    let tomb = |redis: &mut redis::Connection, i: u64| {
        let pattern = format!("{{dirs#*}}:h:{}", dep::id("article", i));
        let dir: Option<String> = redis.keys::<_, Vec<String>>(pattern).unwrap().pop();
        let dir = dir.unwrap_or_else(|| panic!("the directory of article:{i}"));
        let tomb = dir.replacen("}:h:", "}:t:", 1);
        let _: () = redis.rename(&dir, &tomb).unwrap();
    };
    tomb(&mut redis, 30);
    assert_eq!(b.invalidate([dep::id("article", 30)]).await.unwrap(), 1);
    // ... and the next prune merges it back while its dependency has dependents.
    tomb(&mut redis, 31);
    b.prune().await.unwrap();
    assert!(keys(&mut redis, "t").is_empty());
    assert_eq!(b.invalidate([dep::id("article", 31)]).await.unwrap(), 1);
}

/// Issue 19, item 4 under load: two processes prune (directories included) in a loop while a
/// third puts dependents of a few shared tags into every shard and invalidates them. Every
/// invalidation that returned `Ok` must leave none of the entries put before it readable: a
/// prune pass that deleted a directory bit another pass had buried (or a registration had
/// just set) would leave one behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pruners_and_a_churner_never_lose_a_dependent() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let server = RedisServer::start();
    let build = || {
        RedisBackend::builder(&server.url(), "churn")
            .shards(16)
            .auto_prune(None)
            .build()
    };
    let churner = MatroskaCache::new(build().await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let mut pruners = Vec::new();
    for _ in 0..2 {
        let cache = MatroskaCache::new(build().await.unwrap());
        let (stop, passes) = (Arc::clone(&stop), Arc::clone(&passes));
        pruners.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cache.prune().await.unwrap();
                passes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Four tasks of the third process churn at once, on the same few tags.
    let churners: Vec<_> = (0..4u32)
        .map(|task| {
            let churner = churner.clone();
            tokio::spawn(async move {
                let (mut stale, mut refused) = (Vec::new(), 0u32);
                for round in 0..400u32 {
                    let tag = dep::tag(&format!("t{}", round % 4));
                    // A few dependents in shards that change from round to round.
                    let keys: Vec<String> =
                        (0..3).map(|j| format!("k{task}-{round}-{j}")).collect();
                    for key in &keys {
                        // A put may be refused while directory versions keep changing
                        // (prunes back to back renew them): it stored nothing, or it is
                        // found like any other.
                        if let Err(error) = churner.put(key, &round, [tag.clone()], MINUTE).await {
                            assert!(error.is_transient(), "{error}");
                            refused += 1;
                        }
                    }
                    churner.invalidate([tag]).await.unwrap();
                    for key in &keys {
                        if churner.get::<u32>(key).await.unwrap().is_some() {
                            stale.push(key.clone());
                        }
                    }
                }
                (stale, refused)
            })
        })
        .collect();
    let (mut stale, mut refused) = (Vec::new(), 0);
    for task in churners {
        let (more, also) = task.await.unwrap();
        stale.extend(more);
        refused += also;
    }
    stop.store(true, Ordering::Relaxed);
    for pruner in pruners {
        pruner.await.unwrap();
    }
    let passes = passes.load(Ordering::Relaxed);
    assert!(passes >= 10, "only {passes} prune passes ran");
    assert!(refused < 1_600, "{refused} of 4,800 puts refused");
    assert_eq!(
        stale,
        Vec::<String>::new(),
        "readable after their invalidation returned Ok ({passes} prune passes, {refused} puts refused)"
    );
}

/// Issue 20, item 4: with several shards, the `SCAN` pattern of index keys (`{p#*}:r:*`)
/// also matches an entry whose cache key contains `}:r:` (what the HTTP layer stores for
/// `GET /posts?q=}:r:x`). Such a key must not stop the prune (it failed every pass with
/// `WRONGTYPE`), nor count as an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_key_that_looks_like_an_index_never_stops_the_prune() {
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "scan")
            .shards(16)
            .auto_prune(None)
            .build()
            .await
            .unwrap(),
    );
    cache
        .put("plain", &1, [dep::tag("a")], MINUTE)
        .await
        .unwrap();
    let before = cache.prune().await.unwrap();
    for key in ["http:-:/posts?q=}:r:x", "}:r:", "x}:h:y", "z}:t:w"] {
        cache.put(key, &2, [dep::tag("b")], MINUTE).await.unwrap();
    }
    let after = cache.prune().await.unwrap();
    // One more index (b's slice in each shard its 4 entries went to) at most, and no entry.
    assert!(
        after.indexes <= before.indexes + 4,
        "{before:?} then {after:?}"
    );
    assert_eq!(after.removed, 0);
    assert_eq!(after.unreadable, 0);
    // A key of another type under an index's name (written by something else) is skipped
    // and counted; the rest of the pass goes on.
    let mut conn = server.connection();
    let index: String = redis::cmd("KEYS")
        .arg("{scan#*}:r:tag:b")
        .query::<Vec<String>>(&mut conn)
        .unwrap()
        .remove(0);
    let (tag, _) = index.split_once(':').unwrap();
    let _: () = conn.set(format!("{tag}:r:tag:not-a-hash"), "x").unwrap();
    let skipped = cache.prune().await.unwrap();
    assert_eq!(skipped.unreadable, 1, "{skipped:?}");
    assert_eq!(cache.invalidate([dep::tag("b")]).await.unwrap(), 4);
}

/// Issue 20, item 10: the minimal ACL the README gives for one tenant (its prefix's keys,
/// the commands the backend sends) is enough for every operation, prune included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_acl_is_enough() {
    let server = RedisServer::start();
    let mut admin = server.connection();
    let rules = "on >pw ~{tenant}* ~{tenant#* resetchannels -@all \
                 +get +mget +set +del +unlink +exists +getrange +setbit +bitop +rename +incr \
                 +hget +hmget +hset +hdel +hlen +hgetall +hscan +scan +time \
                 +evalsha +eval +script|load +info +wait +ping";
    server.acl_setuser("tenant", rules);
    let url = format!("redis://tenant:pw@127.0.0.1:{}/", server.port());
    for shards in [1, 16] {
        let cache = MatroskaCache::new(
            RedisBackend::builder(&url, "tenant")
                .shards(shards)
                .auto_prune(None)
                .build()
                .await
                .unwrap(),
        );
        cache.put("k", &1, [dep::tag("t")], MINUTE).await.unwrap();
        assert_eq!(cache.get::<i32>("k").await.unwrap(), Some(1));
        let v: i32 = cache
            .get_or_compute("c", MINUTE, || async {
                Ok::<_, std::convert::Infallible>((2, [dep::tag("t")]))
            })
            .await
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(cache.invalidate([dep::tag("t")]).await.unwrap(), 2);
        cache.prune().await.unwrap();
        assert!(cache.delete("k").await.is_ok());
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).unwrap();
    }
}

/// Issue 20, low: a builder's `Debug` (a configuration logged with `{:?}`) never shows a
/// password, in the user part or in a unix socket URL's query.
#[test]
fn a_builder_never_prints_a_password() {
    for url in [
        "redis://app:hunter2@127.0.0.1:6379/",
        "rediss://:hunter2@cache.internal:6380/0",
        "redis+unix:///run/redis.sock?db=2&pass=hunter2",
        "unix:///run/redis.sock?password=hunter2",
    ] {
        let shown = format!("{:?}", RedisBackend::builder(url, "p"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}

/// Issue 20, low: a fenced put (a read-through result) with 12,000 dependencies, about 8,500
/// distinct fence buckets, is stored: the fence table is read and written in chunks (Lua's
/// `unpack` holds about 8,000 values; such pages were never cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_put_with_twelve_thousand_dependencies_is_stored() {
    let server = RedisServer::start();
    for shards in [1, 16] {
        let cache = MatroskaCache::new(
            RedisBackend::builder(&server.url(), &format!("many{shards}"))
                .shards(shards)
                .auto_prune(None)
                .build()
                .await
                .unwrap(),
        );
        let deps: Vec<_> = (0..12_000).map(|i| dep::id("row", i)).collect();
        let ticket = cache.ticket().await.unwrap();
        assert!(cache
            .put_fenced("report", &1, deps.clone(), MINUTE, &ticket)
            .await
            .unwrap());
        assert_eq!(cache.invalidate([dep::id("row", 11_999)]).await.unwrap(), 1);
        // And a read-through whose computation overlapped an invalidation of one of them
        // is still refused.
        let ticket = cache.ticket().await.unwrap();
        cache.invalidate([dep::id("row", 5)]).await.unwrap();
        assert!(!cache
            .put_fenced("report", &2, deps, MINUTE, &ticket)
            .await
            .unwrap());
    }
}

/// A hung server (`SIGSTOP`: connections stay open, nothing answers): after three timeouts
/// its circuit breaker opens and calls fail at once with `Error::Unavailable` instead of
/// each waiting out the timeout; `get_or_compute` computes meanwhile; once the server
/// answers again, a probe closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_opens_the_circuit_breaker() {
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_millis(300))
            .circuit_breaker(3, Duration::from_millis(500))
            .build()
            .await
            .unwrap(),
    );
    cache.put("k", "v", [dep::tag("t")], MINUTE).await.unwrap();
    let server_port = server.port();
    server.pause();
    for _ in 0..3 {
        let err = cache.get::<String>("k").await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }
    assert_eq!(cache.stats().breaker_openings, 1);
    for _ in 0..10 {
        let err = cache.get::<String>("k").await.unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { server } if *server == format!("127.0.0.1:{}", server_port))
                && err.is_transient(),
            "{err}"
        );
    }
    assert_eq!(cache.stats().fast_failures, 10);
    // Read-through computes (a fault), without waiting for the server.
    let faults = cache.stats().faults;
    let value: String = cache
        .get_or_compute("k2", MINUTE, || async {
            Ok::<_, std::io::Error>(("computed".to_owned(), [dep::tag("t")]))
        })
        .await
        .unwrap();
    assert_eq!(value, "computed");
    assert_eq!(cache.stats().faults, faults + 1);
    assert_eq!(cache.stats().fast_failures, 11);

    server.resume();
    // After open_for, one call probes; the server answers, the breaker closes.
    let mut found = None;
    for _ in 0..100 {
        match cache.get::<String>("k").await {
            Ok(value) => {
                found = Some(value);
                break;
            }
            Err(Error::Unavailable { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(found, Some(Some("v".to_owned())));
    assert_eq!(cache.invalidate([dep::tag("t")]).await.unwrap(), 1);
    assert_eq!(cache.stats().breaker_openings, 1);

    // Off: a hung server makes every call wait out the timeout.
    let off = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_millis(200))
            .no_circuit_breaker()
            .build()
            .await
            .unwrap(),
    );
    off.put("k", "v", [], MINUTE).await.unwrap();
    server.pause();
    for _ in 0..5 {
        let err = off.get::<String>("k").await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }
    server.resume();
    assert_eq!(off.stats().breaker_openings, 0);
}

/// With Redis paused and its breaker open, the callers of one key in a process take turns:
/// one computation at a time, and each value goes only to the callers that were already
/// waiting when its computation began. A caller that arrives while a computation runs does
/// not get that computation's value (an invalidation may have completed in between); it
/// waits for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_while_the_cache_is_unreachable() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_millis(200))
            .circuit_breaker(1, Duration::from_secs(600))
            .build()
            .await
            .unwrap(),
    );
    server.pause();
    let _ = cache.get::<String>("k").await.unwrap_err();
    assert_eq!(cache.stats().breaker_openings, 1);

    let runs = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(0usize);
    let call = || {
        let (cache, runs, running, most) = (
            cache.clone(),
            Arc::clone(&runs),
            Arc::clone(&running),
            Arc::clone(&most),
        );
        let mut released = released.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("page", MINUTE, || async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    let _ = released.wait_for(|r| *r > run).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>((format!("run {run}"), [dep::tag("t")]))
                })
                .await
                .unwrap()
        })
    };
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    // The first call computes; nine arrive while it runs.
    let first = call();
    settle().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let during_first: Vec<_> = (0..9).map(|_| call()).collect();
    settle().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the others wait their turn");
    release.send_replace(1);
    assert_eq!(first.await.unwrap(), "run 0");
    // One of the nine computes again (run 0 began before they arrived); one more caller
    // arrives while it runs.
    settle().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let during_second = call();
    settle().await;
    release.send_replace(2);
    for waiting in during_first {
        assert_eq!(waiting.await.unwrap(), "run 1");
    }
    settle().await;
    release.send_replace(3);
    assert_eq!(during_second.await.unwrap(), "run 2");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(most.load(Ordering::SeqCst), 1, "one computation at a time");

    // A failed computation hands nothing on: the next caller in line computes.
    let failures = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (cache, failures) = (cache.clone(), Arc::clone(&failures));
            tokio::spawn(async move {
                cache
                    .get_or_compute("broken", MINUTE, || async move {
                        failures.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<(String, [matroska_cache::Dep; 0]), _>(std::io::Error::other(
                            "db down",
                        ))
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_err());
    }
    assert_eq!(failures.load(Ordering::SeqCst), 3);
    server.resume();
}

/// Redis paused during edits: 100 invalidations fail (and say so), are queued, and this
/// process reads their dependents as gone; once Redis answers again the queue drains by
/// itself and every dependent is gone for every process, with no call from the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_invalidations_are_retried_until_they_succeed() {
    let server = RedisServer::start();
    let cache = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "p")
            .timeout(Duration::from_millis(200))
            .circuit_breaker(3, Duration::from_millis(200))
            .build()
            .await
            .unwrap(),
    );
    let other = MatroskaCache::redis(&server.url(), "p").await.unwrap();
    for i in 0..100 {
        cache
            .put(&format!("page{i}"), &i, [dep::id("article", i)], MINUTE)
            .await
            .unwrap();
    }
    cache
        .put("kept", "v", [dep::tag("other")], MINUTE)
        .await
        .unwrap();
    server.pause();
    for i in 0..100 {
        let err = cache.invalidate([dep::id("article", i)]).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(cache.pending_invalidations(), 100);
    server.resume();
    // Until the queue drains (or after: both are right), this process never reads them.
    for i in 0..100 {
        if let Ok(found) = cache.get::<u64>(&format!("page{i}")).await {
            assert_eq!(found, None, "page{i} was read back before its retry");
        }
    }
    let mut waited = Duration::ZERO;
    while cache.pending_invalidations() > 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(cache.pending_invalidations(), 0, "retried within 5 s");
    for i in 0..100 {
        assert_eq!(other.get::<u64>(&format!("page{i}")).await.unwrap(), None);
    }
    assert_eq!(
        other.get::<String>("kept").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(
        cache.get::<String>("kept").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(cache.stats().invalidations_not_retried, 0);
}

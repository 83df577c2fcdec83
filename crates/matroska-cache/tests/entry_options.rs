//! Per-entry read-through options (`cache.entry(key)`): fail-safe and refresh-ahead, on every
//! backend. An invalidated, deleted or replaced entry is never served, fail-safe or not.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska_cache::{dep, Dep, MatroskaCache};
use support::Harness;

const MINUTE: Duration = Duration::from_secs(60);
/// Short enough to wait out in a test: entries stored for it are past their TTL after
/// [`past`].
const SHORT: Duration = Duration::from_millis(200);

/// Waits until entries stored for [`SHORT`] are past it (with a wide margin: only "after"
/// matters, never "how soon").
async fn past() {
    tokio::time::sleep(SHORT * 3).await;
}

type Computed = Result<(String, Vec<Dep>), std::io::Error>;

fn ok(value: &str) -> Computed {
    Ok((value.to_owned(), vec![dep::tag("t")]))
}

fn down() -> Computed {
    Err(std::io::Error::other("database down"))
}

/// Read-through of `key` with a short TTL and a minute of fail-safe.
async fn read(c: &MatroskaCache, key: &str, computed: Computed) -> Computed {
    c.entry(key)
        .ttl(SHORT)
        .fail_safe(MINUTE)
        .get_or_compute(|| async move { computed })
        .await
        .map(|value: String| (value, Vec::new()))
}

fn value(found: Computed) -> Option<String> {
    found.ok().map(|(value, _)| value)
}

/// Past its TTL a fail-safe entry misses for `get`, `has` and `get_many`; read-through
/// computes as usual and returns the expired value only when computing fails.
async fn fail_safe_serves_the_expired_value_only_when_computing_fails(h: Harness) {
    let c = &h.cache;
    assert_eq!(value(read(c, "k", ok("v1")).await).as_deref(), Some("v1"));
    assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v1"));
    past().await;
    assert_eq!(c.get::<String>("k").await.unwrap(), None);
    assert!(!c.has("k").await.unwrap());
    assert_eq!(c.get_many::<String>(["k"]).await.unwrap(), [None]);

    let before = c.stats();
    assert_eq!(value(read(c, "k", down()).await).as_deref(), Some("v1"));
    assert_eq!(c.stats().fail_safe_hits, before.fail_safe_hits + 1);
    // Computing works again: the new value, stored.
    assert_eq!(value(read(c, "k", ok("v2")).await).as_deref(), Some("v2"));
    assert_eq!(value(read(c, "k", down()).await).as_deref(), Some("v2"));
    assert_eq!(c.stats().fail_safe_hits, before.fail_safe_hits + 1);

    // Without fail-safe the error reaches the caller.
    c.put("plain", "p", [dep::tag("t")], SHORT).await.unwrap();
    past().await;
    let plain = c
        .entry("plain")
        .ttl(SHORT)
        .get_or_compute(|| async { down() })
        .await;
    assert!(plain.is_err());

    // The backend keeps the entry for its TTL plus the window.
    if let support::Kind::Memory(backend) = &h.kind {
        let kept = backend.stored_ttl("k").unwrap();
        assert!(kept > MINUTE && kept <= MINUTE + SHORT, "{kept:?}");
    }
}

/// Invalidation, delete and replacement take the fallback with them, also while the
/// failing computation runs.
async fn fail_safe_never_serves_an_invalidated_deleted_or_replaced_entry(h: Harness) {
    let c = &h.cache;
    let other = h.other_client().await;

    read(c, "inv", ok("old")).await.unwrap();
    past().await;
    assert_eq!(other.invalidate([dep::tag("t")]).await.unwrap(), 1);
    assert!(read(c, "inv", down()).await.is_err());

    read(c, "del", ok("old")).await.unwrap();
    past().await;
    assert!(other.delete("del").await.unwrap());
    assert!(read(c, "del", down()).await.is_err());

    // Invalidated while the computation runs (after this call read the fallback).
    read(c, "during", ok("old")).await.unwrap();
    past().await;
    let found = c
        .entry("during")
        .ttl(SHORT)
        .fail_safe(MINUTE)
        .get_or_compute(|| async {
            other.invalidate([dep::tag("t")]).await.unwrap();
            down()
        })
        .await;
    assert!(found.is_err(), "{found:?}");

    // Replaced while the computation runs: the replacement, not the old fallback.
    read(c, "replaced", ok("old")).await.unwrap();
    past().await;
    let found: Result<String, _> = c
        .entry("replaced")
        .ttl(SHORT)
        .fail_safe(MINUTE)
        .get_or_compute(|| async {
            other
                .put("replaced", "new", [dep::tag("t")], MINUTE)
                .await
                .unwrap();
            down()
        })
        .await;
    assert_eq!(found.unwrap(), "new");
    assert_eq!(c.stats().fail_safe_hits, 1);
}

/// A hit past `refresh_after` returns at once and starts one background refresh per key
/// (one per process, and none in a second process while the first holds the lease); the
/// refreshed value replaces the entry. A failed refresh leaves the entry as it was.
async fn refresh_ahead_returns_at_once_and_refreshes_once(h: Harness) {
    let c = &h.cache;
    let runs = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let call = |c: MatroskaCache, gate: bool| {
        let runs = Arc::clone(&runs);
        let mut released = released.clone();
        async move {
            c.entry("r")
                .ttl(MINUTE)
                .refresh_after(SHORT)
                .get_or_compute(move || async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    if gate {
                        let _ = released.wait_for(|r| *r).await;
                    }
                    Ok::<_, std::io::Error>((format!("v{run}"), [dep::tag("r")]))
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(call(c.clone(), false).await, "v0");
    assert_eq!(call(c.clone(), false).await, "v0");
    assert_eq!(c.stats().refreshes, 0, "not due yet");
    past().await;

    // Due: ten hits here and one in another process return the old value at once, while
    // the one refresh they start is held back.
    let other = h.other_client().await;
    for _ in 0..10 {
        assert_eq!(call(c.clone(), true).await, "v0");
    }
    // Give the refresh time to take the lease, then the other process's hit.
    wait_until(|| runs.load(Ordering::SeqCst) == 2).await;
    assert_eq!(call(other.clone(), true).await, "v0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh computes");
    assert_eq!(c.stats().refreshes, 1);
    assert_eq!(other.stats().refreshes, 0);
    release.send_replace(true);
    wait_for_value(c, "r", "v1").await;
    assert_eq!(call(c.clone(), false).await, "v1");

    // A refresh that fails leaves the entry as it was.
    past().await;
    let failed = c
        .entry("r")
        .ttl(MINUTE)
        .refresh_after(SHORT)
        .get_or_compute(|| async { down() })
        .await;
    assert_eq!(failed.unwrap(), "v1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.get::<String>("r").await.unwrap().as_deref(), Some("v1"));
}

/// A refresh is fenced like any read-through store: one whose dependency is invalidated
/// while it computes stores nothing, and the invalidated entry stays gone.
async fn a_refresh_never_stores_over_an_invalidation(h: Harness) {
    let c = &h.cache;
    let (release, released) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let call = || {
        let mut released = released.clone();
        let started = Arc::clone(&started);
        c.entry("f")
            .ttl(MINUTE)
            .refresh_after(SHORT)
            .get_or_compute(move || async move {
                if started.fetch_add(1, Ordering::SeqCst) > 0 {
                    let _ = released.wait_for(|r| *r).await;
                }
                Ok::<_, std::io::Error>(("old".to_owned(), [dep::tag("f")]))
            })
    };
    assert_eq!(call().await.unwrap(), "old");
    past().await;
    assert_eq!(call().await.unwrap(), "old");
    wait_until(|| started.load(Ordering::SeqCst) == 2).await;
    assert_eq!(c.invalidate([dep::tag("f")]).await.unwrap(), 1);
    release.send_replace(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.get::<String>("f").await.unwrap(), None);
    assert_eq!(c.stats().fenced, 1);
}

async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not done after 5 s");
}

async fn wait_for_value(c: &MatroskaCache, key: &str, expected: &str) {
    for _ in 0..200 {
        if c.get::<String>(key).await.unwrap().as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{key} is not {expected} after 5 s");
}

backend_tests!(
    fail_safe_serves_the_expired_value_only_when_computing_fails,
    fail_safe_never_serves_an_invalidated_deleted_or_replaced_entry,
    refresh_ahead_returns_at_once_and_refreshes_once,
    a_refresh_never_stores_over_an_invalidation,
);

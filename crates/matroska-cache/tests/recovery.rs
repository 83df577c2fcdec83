//! Auto-recovery of failed invalidations, on a backend whose invalidations fail while a
//! switch is on (reads keep working): the process that invalidated never reads the old
//! entries back, and the retry drops them once the backend takes it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use matroska_cache::backend::EntryWithDeps;
use matroska_cache::codec::Encoded;
use matroska_cache::{
    dep, Backend, Dep, Error, Fenced, Lease, MatroskaCache, MemoryBackend, PruneReport, Ticket,
};

const MINUTE: Duration = Duration::from_secs(60);

/// A memory backend whose invalidations time out while `failing` is set.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryBackend,
    failing: Arc<AtomicBool>,
    /// While set, reads of entries with their dependencies time out too.
    reads_failing: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
}

impl Backend for Flaky {
    async fn get(&self, key: &str) -> matroska_cache::Result<Option<Encoded>> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[&str]) -> matroska_cache::Result<Vec<Option<Encoded>>> {
        self.inner.get_many(keys).await
    }
    async fn has(&self, key: &str) -> matroska_cache::Result<bool> {
        self.inner.has(key).await
    }
    async fn put(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
    ) -> matroska_cache::Result<()> {
        self.inner.put(key, value, deps, ttl).await
    }
    async fn get_with_deps(&self, key: &str) -> matroska_cache::Result<Option<EntryWithDeps>> {
        if self.reads_failing.load(Ordering::SeqCst) {
            return Err(Error::Timeout(Duration::from_millis(1)));
        }
        self.inner.get_with_deps(key).await
    }
    async fn begin(
        &self,
        key: &str,
        lease: Option<(u64, Duration)>,
        want: matroska_cache::backend::Want,
    ) -> matroska_cache::Result<(Ticket, Lease)> {
        self.inner.begin(key, lease, want).await
    }
    async fn put_fenced(
        &self,
        key: &str,
        value: Encoded,
        deps: &[Dep],
        ttl: Duration,
        ticket: Ticket,
        lease_holder: Option<u64>,
    ) -> matroska_cache::Result<Fenced> {
        self.inner
            .put_fenced(key, value, deps, ttl, ticket, lease_holder)
            .await
    }
    async fn release_lease(&self, key: &str, holder: u64) -> matroska_cache::Result<()> {
        self.inner.release_lease(key, holder).await
    }
    async fn delete(&self, key: &str) -> matroska_cache::Result<bool> {
        self.inner.delete(key).await
    }
    async fn invalidate(&self, deps: &[Dep]) -> matroska_cache::Result<u64> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Timeout(Duration::from_millis(1)));
        }
        self.inner.invalidate(deps).await
    }
    async fn deps(&self, key: &str) -> matroska_cache::Result<Option<Vec<Dep>>> {
        self.inner.deps(key).await
    }
    async fn prune(&self) -> matroska_cache::Result<PruneReport> {
        self.inner.prune().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invalidating_process_never_reads_the_old_value_back() {
    let backend = Flaky::default();
    let heard = Arc::new(AtomicUsize::new(0));
    let hook = Arc::clone(&heard);
    let cache = MatroskaCache::builder(backend.clone())
        .on_invalidate(move |_| {
            hook.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    // Another process on the same store: the failed invalidation never reached it.
    let other = MatroskaCache::new(backend.inner.clone());
    cache
        .put("page", "old title", [dep::id("article", 1)], MINUTE)
        .await
        .unwrap();
    cache
        .put("kept", "v", [dep::tag("x")], MINUTE)
        .await
        .unwrap();

    backend.failing.store(true, Ordering::SeqCst);
    let err = cache.invalidate([dep::id("article", 1)]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(cache.pending_invalidations(), 1);

    // This process: every read sees the page gone; read-through computes it anew.
    assert_eq!(cache.get::<String>("page").await.unwrap(), None);
    assert!(!cache.has("page").await.unwrap());
    let many: Vec<Option<String>> = cache.get_many(["page", "kept"]).await.unwrap();
    assert_eq!(many, [None, Some("v".to_owned())]);
    let computed: String = cache
        .get_or_compute("page", MINUTE, || async {
            Ok::<_, std::io::Error>(("new title".to_owned(), [dep::id("article", 1)]))
        })
        .await
        .unwrap();
    assert_eq!(computed, "new title");
    // The other process still reads what is stored until the retry gets through.
    assert!(other.has("page").await.unwrap());

    // The retries keep failing while the switch is on, then the queue drains by itself.
    let mut waited = Duration::ZERO;
    while backend.attempts.load(Ordering::SeqCst) < 3 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert!(
        backend.attempts.load(Ordering::SeqCst) >= 3,
        "retried with backoff"
    );
    assert_eq!(cache.pending_invalidations(), 1);
    backend.failing.store(false, Ordering::SeqCst);
    waited = Duration::ZERO;
    while cache.pending_invalidations() > 0 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(cache.pending_invalidations(), 0);
    // The hooks (a CDN purge) heard of the failed attempt and of the retry that got through.
    assert_eq!(heard.load(Ordering::SeqCst), 2);
    assert_eq!(other.get::<String>("page").await.unwrap(), None);
    assert_eq!(
        other.get::<String>("kept").await.unwrap().as_deref(),
        Some("v")
    );
}

/// A fail-safe fallback is not returned when the computation fails after this process's own
/// invalidation of one of its dependencies failed, and the entry cannot be read again to
/// check: the process reads its queued invalidations as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_never_returns_a_dependent_of_a_queued_invalidation() {
    let backend = Flaky::default();
    let cache = MatroskaCache::new(backend.clone());
    let read = |fails: bool| {
        let (cache, backend) = (cache.clone(), backend.clone());
        async move {
            cache
                .entry("page")
                .ttl(Duration::from_millis(100))
                .fail_safe(MINUTE)
                .get_or_compute(|| async {
                    if !fails {
                        return Ok(("v1".to_owned(), [dep::tag("t")]));
                    }
                    // The database changed; its invalidation fails and is queued; then
                    // the database fails and so does reading the cache.
                    backend.failing.store(true, Ordering::SeqCst);
                    assert!(cache.invalidate([dep::tag("t")]).await.is_err());
                    backend.reads_failing.store(true, Ordering::SeqCst);
                    Err(Error::Timeout(Duration::from_millis(1)))
                })
                .await
        }
    };
    assert_eq!(read(false).await.unwrap(), "v1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        read(true).await.is_err(),
        "the fallback depends on a queued invalidation"
    );
    assert_eq!(cache.stats().fail_safe_hits, 0);
}

//! `tracing` events and counters, on both backends.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matroska_cache::dep;
use support::Harness;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn events_and_counters(h: Harness) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread runtime runs every future on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let c = &h.cache;
    c.put(
        "page",
        "<p>",
        [dep::id("article", 7)],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    c.get::<String>("page").await.unwrap();
    c.invalidate([dep::id("article", 7)]).await.unwrap();
    c.get::<String>("page").await.unwrap();
    let _ = c.get::<u32>("page").await;
    c.put("bad", &1, [], Duration::ZERO).await.unwrap_err();

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("cache put") && log.contains("key=\"page\""),
        "{log}"
    );
    assert!(log.contains("id:article:7"), "{log}");
    assert!(
        log.contains("cache invalidate") && log.contains("dropped=1"),
        "{log}"
    );
    assert!(
        log.contains("cache hit") && log.contains("cache miss"),
        "{log}"
    );

    let stats = c.stats();
    assert_eq!(stats.puts, 1);
    assert_eq!((stats.hits, stats.misses), (1, 2));
    assert_eq!((stats.invalidations, stats.dropped), (1, 1));
    assert_eq!(stats.errors, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn memory_events_and_counters() {
    events_and_counters(support::memory().await).await;
}

#[tokio::test(flavor = "current_thread")]
async fn redis_events_and_counters() {
    events_and_counters(support::redis().await).await;
}

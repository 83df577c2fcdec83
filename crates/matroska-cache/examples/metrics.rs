//! The cache's counters and latencies on a Prometheus `/metrics` page.
//!
//! ```sh
//! cargo run --example metrics --features metrics            # in-memory cache
//! cargo run --example metrics --features metrics -- redis://127.0.0.1:6379/
//! curl http://127.0.0.1:9184/metrics                         # while it runs
//! ```
//!
//! With the `metrics` feature every cache reports through the `metrics` facade, so any
//! exporter works; this one is `metrics-exporter-prometheus` with its own HTTP listener.
//! Install the exporter before building the cache: the cache registers its metrics once,
//! labelled with its prefix (`"memory"` for the in-memory backend).

use std::net::SocketAddr;
use std::time::Duration;

use matroska_cache::{dep, MatroskaCache};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = "127.0.0.1:9184".parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let cache = match std::env::args().nth(1) {
        Some(url) => MatroskaCache::redis(&url, "metrics-example").await?,
        None => MatroskaCache::in_memory(),
    };
    let ttl = Duration::from_secs(60);
    for id in 0..100u32 {
        let _: String = cache
            .get_or_compute(&format!("article:{id}"), ttl, || async move {
                Ok::<_, std::io::Error>((format!("<h1>{id}</h1>"), [dep::id("article", id)]))
            })
            .await?;
        let _: Option<String> = cache.get(&format!("article:{id}")).await?;
    }
    cache.invalidate([dep::id("article", 7)]).await?;

    // What a scraper would see.
    let mut page = String::new();
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    conn.read_to_string(&mut page).await?;
    for line in page.lines().filter(|l| l.starts_with("matroska_cache_")) {
        println!("{line}");
    }
    println!("\nServing http://{addr}/metrics; Ctrl-C to stop.");
    if std::env::var_os("METRICS_EXAMPLE_EXIT").is_none() {
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

//! With the `metrics` feature, counters and latency histograms reach whatever recorder the
//! application installed, labelled with the cache's prefix, on both backends.
#![cfg(feature = "metrics")]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use matroska_cache::dep;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use support::Harness;

/// One recorder for the process, installed before any cache is built.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder")
    })
}

/// The value of `metric` with `prefix="label"` in the rendered page.
fn value(page: &str, metric: &str, label: &str) -> Option<f64> {
    let start = format!("{metric}{{prefix=\"{label}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&start))
        .and_then(|v| v.parse().ok())
}

async fn counters_and_latencies_are_exported(h: Harness) {
    let handle = recorder();
    // A cache built after the recorder: the harness's was built before, so take another.
    let c = h.other_client().await;
    let label = h.prefix().unwrap_or("memory").to_owned();
    let ttl = Duration::from_secs(60);
    c.put("a", "x", [dep::tag("t")], ttl).await.unwrap();
    let _: Option<String> = c.get("a").await.unwrap();
    let _: Option<String> = c.get("missing").await.unwrap();
    let _: String = c
        .get_or_compute("b", ttl, || async {
            Ok::<_, ()>(("y".to_owned(), [dep::tag("t")]))
        })
        .await
        .unwrap();
    assert_eq!(c.invalidate([dep::tag("t")]).await.unwrap(), 2);

    let page = handle.render();
    let get = |m: &str| value(&page, m, &label).unwrap_or_else(|| panic!("{m} missing:\n{page}"));
    assert_eq!(get("matroska_cache_hits_total"), 1.0);
    assert!(get("matroska_cache_misses_total") >= 2.0);
    assert_eq!(get("matroska_cache_puts_total"), 2.0);
    assert_eq!(get("matroska_cache_invalidations_total"), 1.0);
    assert_eq!(get("matroska_cache_dropped_total"), 2.0);
    assert_eq!(get("matroska_cache_computations_total"), 1.0);
    for histogram in ["get", "put", "invalidate"] {
        let count = format!("matroska_cache_{histogram}_seconds_count");
        assert!(get(&count) >= 1.0, "{count}");
    }
}

backend_tests!(counters_and_latencies_are_exported);

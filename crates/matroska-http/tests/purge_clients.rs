//! The Fastly and Cloudflare purge clients against a local mock of each API.
#![cfg(feature = "purge-clients")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use matroska_cache::{dep, MatroskaCache, MemoryBackend};
use matroska_http::purge::clients::{CloudflarePurger, FastlyPurger, PurgeError};
use matroska_http::purge::purging;
use matroska_http::{Cdn, SurrogateKeys};

/// One request the mock received: its path, headers and body.
type Received = Arc<Mutex<Vec<(String, HeaderMap, String)>>>;

/// A mock API on loopback that records requests and answers `status`.
async fn mock(status: StatusCode) -> (String, Received) {
    let received = Received::default();
    async fn record(
        State((received, status)): State<(Received, StatusCode)>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        let body = String::from_utf8_lossy(&body).into_owned();
        received
            .lock()
            .unwrap()
            .push((uri.path().to_owned(), headers, body));
        (status, "{\"success\": true}")
    }
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state((received.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id:post:{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastly_gets_batches_of_256_keys_in_the_surrogate_key_header() {
    let (endpoint, received) = mock(StatusCode::OK).await;
    let fastly = FastlyPurger::new("svc1", "secret")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap()
        .soft(true);
    fastly.purge_keys(&keys(300)).await.unwrap();
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 2);
    for ((path, headers, _), expected) in received.iter().zip([256, 44]) {
        assert_eq!(path, "/service/svc1/purge");
        assert_eq!(headers["fastly-key"], "secret");
        assert_eq!(headers["fastly-soft-purge"], "1");
        let sent: Vec<&str> = headers["surrogate-key"]
            .to_str()
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(sent.len(), expected);
    }
    assert!(received[0].1["surrogate-key"]
        .to_str()
        .unwrap()
        .starts_with("id:post:0 id:post:1 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_gets_batches_of_30_tags_as_json() {
    let (endpoint, received) = mock(StatusCode::OK).await;
    let cloudflare = CloudflarePurger::new("zone9", "token")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap();
    cloudflare.purge_keys(&keys(70)).await.unwrap();
    let received = received.lock().unwrap();
    let sizes: Vec<usize> = received
        .iter()
        .map(|(path, headers, body)| {
            assert_eq!(path, "/zones/zone9/purge_cache");
            assert_eq!(headers["authorization"], "Bearer token");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            json["tags"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(sizes, [30, 30, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_is_a_typed_error() {
    let (endpoint, _) = mock(StatusCode::FORBIDDEN).await;
    let fastly = FastlyPurger::new("svc", "bad")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap();
    match fastly.purge_keys(&keys(1)).await {
        Err(PurgeError::Status { status, body }) => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(body.contains("success"), "{body}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    // Nothing listens here: a request error, not a hang.
    let nowhere = CloudflarePurger::new("z", "t")
        .unwrap()
        .endpoint("http://127.0.0.1:9")
        .unwrap();
    assert!(matches!(
        nowhere.purge_keys(&keys(1)).await,
        Err(PurgeError::Request(_))
    ));
    assert!(matches!(
        FastlyPurger::new("svc", "line\nbreak"),
        Err(PurgeError::Invalid(_))
    ));
}

/// An invalidation reaches the CDN through `on_invalidate`, with the fallback key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_purges_its_keys_at_the_cdn() {
    let (endpoint, received) = mock(StatusCode::OK).await;
    let cloudflare = CloudflarePurger::new("zone", "token")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap()
        .keys(SurrogateKeys::new(Cdn::Cloudflare).fallback("blog-all"));
    let cache = MatroskaCache::builder(MemoryBackend::default())
        .on_invalidate(purging(cloudflare))
        .build()
        .unwrap();
    cache.invalidate([dep::id("post", 3)]).await.unwrap();
    let mut waited = Duration::ZERO;
    while received.lock().unwrap().is_empty() && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    let json: serde_json::Value = serde_json::from_str(&received[0].2).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["blog-all", "id:post:3"]));
}

/// A mock API that answers 429 with `Retry-After: 1` to its first request, then `status`.
async fn throttling_mock() -> (String, Received) {
    let received = Received::default();
    async fn record(
        State(received): State<Received>,
        uri: Uri,
        headers: HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let mut all = received.lock().unwrap();
        all.push((uri.path().to_owned(), headers, String::new()));
        if all.len() == 1 {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response()
        } else {
            (StatusCode::OK, "{}").into_response()
        }
    }
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// A mock API that sends its answer's head and then never ends the body.
async fn stalling_mock() -> String {
    let app = Router::new().route(
        "/{*path}",
        post(|| async {
            let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
            axum::body::Body::from_stream(never)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_stalls_are_bounded() {
    let (endpoint, received) = throttling_mock().await;
    let fastly = FastlyPurger::new("svc", "t")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap();
    fastly.purge_keys(&keys(3)).await.unwrap();
    assert_eq!(received.lock().unwrap().len(), 2, "one 429, then the retry");

    // A body that never ends: the request fails at its timeout (and its retries too).
    let stalling = CloudflarePurger::new("zone", "t")
        .unwrap()
        .timeout(Duration::from_millis(200))
        .endpoint(&stalling_mock().await)
        .unwrap();
    assert!(matches!(
        stalling.purge_keys(&keys(1)).await,
        Err(PurgeError::Request(message)) if message.contains("timed out")
    ));
}

#[tokio::test]
async fn settings_that_would_leak_the_token_are_refused() {
    for endpoint in ["http://api.fastly.com", "http://10.0.0.1:8080", "ftp://x"] {
        assert!(
            matches!(
                FastlyPurger::new("svc", "t").unwrap().endpoint(endpoint),
                Err(PurgeError::Invalid(_))
            ),
            "{endpoint}"
        );
    }
    for endpoint in [
        "http://127.0.0.1:1",
        "http://localhost:1",
        "http://[::1]:1",
        "https://x.example",
    ] {
        assert!(
            CloudflarePurger::new("z", "t")
                .unwrap()
                .endpoint(endpoint)
                .is_ok(),
            "{endpoint}"
        );
    }
    for id in ["svc/../../other", "svc?x=1", "", "a b"] {
        assert!(
            matches!(FastlyPurger::new(id, "t"), Err(PurgeError::Invalid(_))),
            "{id}"
        );
        assert!(
            matches!(CloudflarePurger::new(id, "t"), Err(PurgeError::Invalid(_))),
            "{id}"
        );
    }
}

/// A burst of invalidations makes a few requests, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_invalidations_are_coalesced() {
    let (endpoint, received) = mock(StatusCode::OK).await;
    let fastly = FastlyPurger::new("svc", "t")
        .unwrap()
        .endpoint(&endpoint)
        .unwrap();
    let cache = MatroskaCache::builder(MemoryBackend::default())
        .on_invalidate(purging(fastly))
        .build()
        .unwrap();
    for i in 0..1000 {
        cache.invalidate([dep::id("post", i)]).await.unwrap();
    }
    // Every key is purged in the end (1,000 keys and the fallback).
    let purged = || -> usize {
        let received = received.lock().unwrap();
        let keys: std::collections::BTreeSet<String> = received
            .iter()
            .flat_map(|(_, headers, _)| {
                let keys = headers["surrogate-key"].to_str().unwrap().to_owned();
                keys.split(' ').map(str::to_owned).collect::<Vec<_>>()
            })
            .filter(|key| key.starts_with("id:post:"))
            .collect();
        keys.len()
    };
    let mut waited = Duration::ZERO;
    while purged() < 1000 && waited < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    let requests = received.lock().unwrap().len();
    assert_eq!(purged(), 1000);
    assert!(
        requests <= 20,
        "{requests} requests for 1,000 invalidations"
    );
}

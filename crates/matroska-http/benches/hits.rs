//! Cache hits through axum over HTTP on loopback: our layer (on the in-memory cache and on
//! Redis) against the bare handler returning the same bytes and against
//! `axum-response-cache`, in one run.
//!
//! ```text
//! cargo bench -p matroska-http --bench hits
//! ```
//!
//! Each server runs on its own port in this process; clients keep their connections alive
//! and send `GET`s for [`ROUND`] per round, ours and the others alternating, 5 rounds each
//! (the median round counts). Client and servers share the machine's cores, alike for every
//! row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use matroska_cache::{dep, depends_on, MatroskaCache, RedisBackend};
use matroska_http::CacheLayer;
use matroska_test_support::RedisServer;

/// How long each side is measured per round.
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;
/// The page: 4 KiB of HTML.
const PAGE_LEN: usize = 4096;

fn page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        let mut page = String::from("<!doctype html><html><body>");
        while page.len() < PAGE_LEN - 14 {
            page.push_str("<p>cached</p>");
        }
        page.push_str("</body></html>");
        page
    })
}

async fn handler() -> &'static str {
    depends_on([dep::id("article", 1)]);
    page()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

struct Side {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `tasks` clients sending `GET /page` for [`ROUND`]; checks every answer is the page (and
/// a HIT where `hit` is set).
async fn round(
    client: &Client<HttpConnector, Body>,
    address: SocketAddr,
    tasks: usize,
    hit: Option<&'static str>,
) -> Side {
    let url: Arc<str> = format!("http://{address}/page").into();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (client, url) = (client.clone(), Arc::clone(&url));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < ROUND {
                    let begin = Instant::now();
                    let request = axum::http::Request::get(&*url).body(Body::empty()).unwrap();
                    let response = client.request(request).await.expect("request");
                    if let Some(label) = hit {
                        assert_eq!(response.headers()[label], "HIT");
                    }
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body.len(), page().len());
                    latencies.push(begin.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Side {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let redis_server = RedisServer::start();
    let redis_cache = MatroskaCache::new(
        RedisBackend::builder(&redis_server.url(), "hits")
            .build()
            .await
            .unwrap(),
    );
    let ttl = Duration::from_secs(600);
    let bare = serve(Router::new().route("/page", get(handler))).await;
    let memory = serve(
        Router::new()
            .route("/page", get(handler))
            .layer(CacheLayer::new(MatroskaCache::in_memory(), ttl)),
    )
    .await;
    let redis = serve(
        Router::new()
            .route("/page", get(handler))
            .layer(CacheLayer::new(redis_cache, ttl)),
    )
    .await;
    let theirs = serve(
        Router::new()
            .route("/page", get(handler))
            .layer(axum_response_cache::CacheLayer::with_lifespan(ttl)),
    )
    .await;
    let client: Client<HttpConnector, Body> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    // Warm every cache (and every connection pool).
    for address in [bare, memory, redis, theirs] {
        round_once(&client, address).await;
    }

    println!("| server | tasks | requests/s | p50 | p99 | vs bare handler |");
    println!("|---|---|---|---|---|---|");
    for tasks in [1, 32] {
        let sides: [(&str, SocketAddr, Option<&'static str>); 4] = [
            ("bare handler (same bytes)", bare, None),
            ("matroska-http, in memory", memory, Some("x-cache")),
            ("matroska-http, Redis", redis, Some("x-cache")),
            ("axum-response-cache 0.4", theirs, None),
        ];
        let mut results: Vec<Vec<Side>> = sides.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, (_, address, hit)) in sides.iter().enumerate() {
                results[i].push(round(&client, *address, tasks, *hit).await);
            }
        }
        let medians: Vec<Side> = results
            .into_iter()
            .map(|mut rounds| {
                rounds.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
                rounds.swap_remove(rounds.len() / 2)
            })
            .collect();
        let bare_rate = medians[0].per_sec;
        for ((name, _, _), side) in sides.iter().zip(&medians) {
            println!(
                "| {name} | {tasks} | {:.0} | {:.1?} | {:.1?} | {:.2}x |",
                side.per_sec,
                side.p50,
                side.p99,
                side.per_sec / bare_rate
            );
        }
    }
}

async fn round_once(client: &Client<HttpConnector, Body>, address: SocketAddr) {
    for _ in 0..2 {
        let request = axum::http::Request::get(format!("http://{address}/page"))
            .body(Body::empty())
            .unwrap();
        let response = client.request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
}

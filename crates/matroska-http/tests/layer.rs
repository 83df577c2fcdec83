//! The layer's behaviour, on the in-memory backend and on a real `redis-server` the test
//! starts: every test runs on both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use matroska_cache::{dep, depends_on, MatroskaCache, RedisBackend};
use matroska_http::{CacheLayer, Cdn, RequestNoCache, SurrogateKeys};
use matroska_test_support::RedisServer;
use support::{backends, get_req, send, x_cache};

mod support;

const MINUTE: Duration = Duration::from_secs(60);

/// The blog of the tests: handlers count their runs and declare what they read.
#[derive(Clone, Default)]
struct Blog {
    runs: Arc<AtomicUsize>,
    title: Arc<std::sync::Mutex<String>>,
}

impl Blog {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

async fn post(State(blog): State<Blog>, Path(id): Path<u64>) -> String {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    depends_on([dep::id("post", id)]);
    let title = blog.title.lock().unwrap().clone();
    format!("<h1>{title} {id}</h1>")
}

async fn slow(State(blog): State<Blog>) -> String {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    depends_on([dep::tag("slow")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    "slow".to_owned()
}

async fn greeting(State(blog): State<Blog>, headers: HeaderMap) -> impl IntoResponse {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    let french = headers
        .get(header::ACCEPT_LANGUAGE)
        .is_some_and(|v| v.as_bytes().starts_with(b"fr"));
    (
        [(header::VARY, "Accept-Language")],
        if french { "bonjour" } else { "hello" },
    )
}

async fn with_header(State(blog): State<Blog>, Path(kind): Path<String>) -> Response<Body> {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    let builder = Response::builder();
    let builder = match kind.as_str() {
        "cookie" => builder.header(header::SET_COOKIE, "session=1"),
        "private" => builder.header(header::CACHE_CONTROL, "private, max-age=60"),
        "no-store" => builder.header(header::CACHE_CONTROL, "no-store"),
        "sse" => builder.header(header::CONTENT_TYPE, "text/event-stream"),
        "missing" => builder.status(StatusCode::NOT_FOUND),
        "weak-etag" => builder.header(header::ETAG, "W/\"v1\""),
        "strong-etag" => builder.header(header::ETAG, "\"v1\""),
        _ => builder,
    };
    builder.body(Body::from(kind)).unwrap()
}

async fn big(State(blog): State<Blog>) -> Body {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    // Streamed in chunks, without a length: the layer finds the size while reading.
    let chunks = (0..64).map(|i| Ok::<_, std::io::Error>(vec![b'a' + (i % 26) as u8; 1024]));
    Body::from_stream(futures_util::stream::iter(chunks))
}

/// A page built from a fragment another `get_or_compute` caches: the page depends on what
/// the fragment read.
async fn nested(State((blog, cache)): State<(Blog, MatroskaCache)>) -> String {
    blog.runs.fetch_add(1, Ordering::SeqCst);
    let sidebar: String = cache
        .get_or_compute("sidebar", MINUTE, || async {
            Ok::<_, std::io::Error>(("sidebar".to_owned(), [dep::tag("authors")]))
        })
        .await
        .unwrap();
    format!("page with {sidebar}")
}

fn app(cache: &MatroskaCache, blog: &Blog, layer: CacheLayer) -> Router {
    let nested_routes = Router::new()
        .route("/nested", get(nested))
        .with_state((blog.clone(), cache.clone()));
    Router::new()
        .route("/posts/{id}", get(post))
        .route("/slow", get(slow))
        .route("/greeting", get(greeting))
        .route("/kind/{kind}", get(with_header))
        .route("/big", get(big))
        .with_state(blog.clone())
        .merge(nested_routes)
        .layer(layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_cached_until_what_it_read_is_invalidated() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        *blog.title.lock().unwrap() = "Old".into();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));

        let (first, body) = send(&app, get_req("/posts/1")).await;
        assert_eq!(
            (x_cache(&first), body.as_str()),
            ("MISS", "<h1>Old 1</h1>"),
            "{name}"
        );
        let etag = first.headers()[header::ETAG].clone();
        let (second, body) = send(&app, get_req("/posts/1")).await;
        assert_eq!(
            (x_cache(&second), body.as_str()),
            ("HIT", "<h1>Old 1</h1>"),
            "{name}"
        );
        assert_eq!(
            second.headers()[header::ETAG],
            etag,
            "{name}: the ETag is stable"
        );
        assert_eq!(blog.runs(), 1, "{name}");

        // Another post's invalidation leaves it; its own drops it.
        *blog.title.lock().unwrap() = "New".into();
        cache.invalidate([dep::id("post", 2)]).await.unwrap();
        let (_, body) = send(&app, get_req("/posts/1")).await;
        assert_eq!(body, "<h1>Old 1</h1>", "{name}");
        assert_eq!(
            cache.invalidate([dep::id("post", 1)]).await.unwrap(),
            1,
            "{name}"
        );
        let (third, body) = send(&app, get_req("/posts/1")).await;
        assert_eq!(
            (x_cache(&third), body.as_str()),
            ("MISS", "<h1>New 1</h1>"),
            "{name}"
        );
        assert_ne!(
            third.headers()[header::ETAG],
            etag,
            "{name}: new content, new ETag"
        );
        // The query is part of the key.
        let (other, _) = send(&app, get_req("/posts/1?page=2")).await;
        assert_eq!(x_cache(&other), "MISS", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_if_none_match_gets_a_304_without_running_the_handler() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        let (first, _) = send(&app, get_req("/posts/7")).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let conditional = |tag: &str| {
            Request::get("/posts/7")
                .header(header::IF_NONE_MATCH, tag)
                .body(Body::empty())
                .unwrap()
        };
        let (revalidated, body) = send(&app, conditional(&etag)).await;
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{name}");
        assert_eq!(
            (x_cache(&revalidated), body.as_str()),
            ("HIT", ""),
            "{name}"
        );
        assert_eq!(revalidated.headers()[header::ETAG], etag.as_str(), "{name}");
        assert_eq!(blog.runs(), 1, "{name}");
        let (other, body) = send(&app, conditional("\"something-else\"")).await;
        assert_eq!(
            (other.status(), body.as_str()),
            (StatusCode::OK, "<h1> 7</h1>"),
            "{name}"
        );

        // After an invalidation the handler runs; the same content may still answer 304.
        cache.invalidate([dep::id("post", 7)]).await.unwrap();
        let (after, _) = send(&app, conditional(&etag)).await;
        assert_eq!(
            (after.status(), x_cache(&after)),
            (StatusCode::NOT_MODIFIED, "MISS"),
            "{name}"
        );
        assert_eq!(blog.runs(), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_strong_etag_is_kept_and_a_weak_one_replaced() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        for (kind, kept) in [("strong-etag", true), ("weak-etag", false)] {
            let uri = format!("/kind/{kind}");
            let (first, _) = send(&app, get_req(&uri)).await;
            let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
            assert_eq!(etag == "\"v1\"", kept, "{name}: {etag}");
            assert!(
                etag.starts_with('"'),
                "{name}: served ETags are strong: {etag}"
            );
            let conditional = Request::get(&uri)
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap();
            let (revalidated, _) = send(&app, conditional).await;
            assert_eq!(
                revalidated.status(),
                StatusCode::NOT_MODIFIED,
                "{name} {kind}"
            );
        }
        assert_eq!(blog.runs(), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_served_from_the_get_entry() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        let head = || Request::head("/posts/3").body(Body::empty()).unwrap();
        let (first, body) = send(&app, head()).await;
        assert_eq!(
            (first.status(), x_cache(&first), body.as_str()),
            (StatusCode::OK, "MISS", ""),
            "{name}"
        );
        let (get, body) = send(&app, get_req("/posts/3")).await;
        assert_eq!(
            (x_cache(&get), body.as_str()),
            ("HIT", "<h1> 3</h1>"),
            "{name}"
        );
        let (again, body) = send(&app, head()).await;
        assert_eq!((x_cache(&again), body.as_str()), ("HIT", ""), "{name}");
        let length = "<h1> 3</h1>".len().to_string();
        assert_eq!(
            again.headers()[header::CONTENT_LENGTH],
            length.as_str(),
            "{name}"
        );
        // A HEAD whose response is not stored gets no body either.
        let head_cookie = Request::head("/kind/cookie").body(Body::empty()).unwrap();
        let (uncached, body) = send(&app, head_cookie).await;
        assert_eq!((x_cache(&uncached), body.as_str()), ("MISS", ""), "{name}");
        assert_eq!(blog.runs(), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_headers_key_their_own_variants() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        let in_lang = |lang: Option<&str>| {
            let mut request = Request::get("/greeting");
            if let Some(lang) = lang {
                request = request.header(header::ACCEPT_LANGUAGE, lang);
            }
            request.body(Body::empty()).unwrap()
        };
        let mut seen = Vec::new();
        for lang in [Some("fr"), Some("en"), None, Some("fr"), Some("en"), None] {
            let (response, body) = send(&app, in_lang(lang)).await;
            seen.push((x_cache(&response).to_owned(), body));
        }
        let expected = [
            ("MISS", "bonjour"),
            ("MISS", "hello"),
            ("MISS", "hello"),
            ("HIT", "bonjour"),
            ("HIT", "hello"),
            ("HIT", "hello"),
        ];
        let seen: Vec<(&str, &str)> = seen.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(seen, expected, "{name}");
        assert_eq!(blog.runs(), 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_private_is_shared() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        for kind in ["cookie", "private", "no-store", "missing", "sse"] {
            let uri = format!("/kind/{kind}");
            let (first, body) = send(&app, get_req(&uri)).await;
            assert_eq!(
                (x_cache(&first), body.as_str()),
                ("MISS", kind),
                "{name} {kind}"
            );
            let (second, _) = send(&app, get_req(&uri)).await;
            assert_eq!(
                x_cache(&second),
                "MISS",
                "{name}: {kind} must not be stored"
            );
        }
        assert_eq!(blog.runs(), 10, "{name}");

        // Requests with credentials bypass the shared entry, even a cached one.
        let (_, _) = send(&app, get_req("/posts/1")).await;
        for (header, value) in [(header::AUTHORIZATION, "Bearer x"), (header::COOKIE, "s=1")] {
            let request = Request::get("/posts/1")
                .header(header, value)
                .body(Body::empty())
                .unwrap();
            let (response, _) = send(&app, request).await;
            assert_eq!(x_cache(&response), "BYPASS", "{name}");
        }
        assert_eq!(blog.runs(), 13, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_opt_in_to_per_user_entries() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let layer = CacheLayer::new(cache.clone(), MINUTE).per_user(|parts| {
            let token = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            token.strip_prefix("Bearer ").map(str::to_owned)
        });
        let app = app(&cache, &blog, layer);
        let as_user = |token: &str| {
            Request::get("/posts/1")
                .header(header::AUTHORIZATION, token)
                .body(Body::empty())
                .unwrap()
        };
        let labels: Vec<String> = {
            let mut labels = Vec::new();
            for token in [
                "Bearer alice",
                "Bearer alice",
                "Bearer bob",
                "Basic eHh4",
                "Basic eHh4",
            ] {
                let (response, _) = send(&app, as_user(token)).await;
                labels.push(x_cache(&response).to_owned());
            }
            labels
        };
        assert_eq!(
            labels,
            ["MISS", "HIT", "MISS", "BYPASS", "BYPASS"],
            "{name}"
        );
        // The shared entry is another one.
        let (shared, _) = send(&app, get_req("/posts/1")).await;
        assert_eq!(x_cache(&shared), "MISS", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_request_refreshes_only_when_trusted() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let no_cache = |editor: bool| {
            let request = Request::get("/posts/5").header(header::CACHE_CONTROL, "no-cache");
            let request = if editor {
                request.header("x-editor", "yes")
            } else {
                request
            };
            request.body(Body::empty()).unwrap()
        };
        let layer = CacheLayer::new(cache.clone(), MINUTE)
            .key_prefix("posts")
            .refresh_if(|parts| parts.headers.contains_key("x-editor"));
        let refreshing = app(&cache, &blog, layer);
        send(&refreshing, get_req("/posts/5")).await;
        *blog.title.lock().unwrap() = "Edited behind the cache's back".into();
        // Anyone's no-cache is served from the cache.
        let (served, body) = send(&refreshing, no_cache(false)).await;
        assert_eq!(x_cache(&served), "HIT", "{name}");
        assert!(!body.contains("Edited"), "{name}");
        // A trusted one refreshes.
        let (refreshed, body) = send(&refreshing, no_cache(true)).await;
        assert_eq!(x_cache(&refreshed), "MISS", "{name}");
        assert!(body.contains("Edited"), "{name}");
        let (hit, body) = send(&refreshing, get_req("/posts/5")).await;
        assert_eq!(x_cache(&hit), "HIT", "{name}");
        assert!(body.contains("Edited"), "{name}");

        // `Refresh` honours it from everyone.
        let everyone = app(
            &cache,
            &blog,
            CacheLayer::new(cache.clone(), MINUTE)
                .key_prefix("posts")
                .request_no_cache(RequestNoCache::Refresh),
        );
        let (served, _) = send(&everyone, no_cache(false)).await;
        assert_eq!(x_cache(&served), "MISS", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_through_whole_and_uncached() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(
            &cache,
            &blog,
            CacheLayer::new(cache.clone(), MINUTE)
                .max_body(10_000)
                .buffer_streams(true),
        );
        for _ in 0..2 {
            let (response, body) = send(&app, get_req("/big")).await;
            assert_eq!(x_cache(&response), "MISS", "{name}");
            assert_eq!(body.len(), 64 * 1024, "{name}: the whole body, in order");
            assert!(body.starts_with("aaaa") && body.ends_with("llll"), "{name}");
        }
        // Under a larger limit it is cached.
        let app = app_with_limit(&cache, &blog, 1 << 20);
        send(&app, get_req("/big")).await;
        let (response, body) = send(&app, get_req("/big")).await;
        assert_eq!(
            (x_cache(&response), body.len()),
            ("HIT", 64 * 1024),
            "{name}"
        );
    }
}

fn app_with_limit(cache: &MatroskaCache, blog: &Blog, limit: usize) -> Router {
    app(
        cache,
        blog,
        CacheLayer::new(cache.clone(), MINUTE)
            .max_body(limit)
            .buffer_streams(true),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_url_run_the_handler_once() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(&cache, &blog, CacheLayer::new(cache.clone(), MINUTE));
        let requests = (0..16).map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get_req("/slow")).await })
        });
        let mut labels = Vec::new();
        for request in requests {
            let (response, body) = request.await.unwrap();
            assert_eq!(body, "slow", "{name}");
            labels.push(x_cache(&response).to_owned());
        }
        assert_eq!(blog.runs(), 1, "{name}: {labels:?}");
        assert_eq!(labels.iter().filter(|l| *l == "MISS").count(), 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_computations_and_route_tags_are_dependencies() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let app = app(
            &cache,
            &blog,
            CacheLayer::new(cache.clone(), MINUTE)
                .depends_on([dep::tag("layout")])
                .surrogate_keys(SurrogateKeys::new(Cdn::Fastly)),
        );
        let (first, _) = send(&app, get_req("/nested")).await;
        let keys = first.headers()["surrogate-key"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(keys, "tag:authors tag:layout", "{name}");
        let (hit, _) = send(&app, get_req("/nested")).await;
        assert_eq!(x_cache(&hit), "HIT", "{name}");
        assert_eq!(
            hit.headers()["surrogate-key"],
            keys.as_str(),
            "{name}: the same on a hit"
        );
        // What the nested fragment read drops the page (and the fragment).
        assert_eq!(
            cache.invalidate([dep::tag("authors")]).await.unwrap(),
            2,
            "{name}"
        );
        let (after, _) = send(&app, get_req("/nested")).await;
        assert_eq!(x_cache(&after), "MISS", "{name}");
        assert_eq!(
            cache.invalidate([dep::tag("layout")]).await.unwrap(),
            1,
            "{name}"
        );
        let (after, _) = send(&app, get_req("/nested")).await;
        assert_eq!(x_cache(&after), "MISS", "{name}");
    }
}

/// A page whose dependency is invalidated while its handler runs is sent, but not stored:
/// the next request runs the handler again (stale-set fencing, through the layer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_invalidated_while_it_renders_is_not_stored() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(Some((started_tx, go_rx))));
        let runs = blog.runs.clone();
        let handler = move || {
            let (gate, runs) = (gate.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                depends_on([dep::id("post", 42)]);
                let waiting = gate.lock().unwrap().take();
                if let Some((started, go)) = waiting {
                    // Read "the database", then wait while an edit commits.
                    started.send(()).unwrap();
                    go.await.unwrap();
                }
                "rendered"
            }
        };
        let app = Router::new()
            .route("/racy", get(handler))
            .layer(CacheLayer::new(cache.clone(), MINUTE));
        let first = tokio::spawn({
            let app = app.clone();
            async move { send(&app, get_req("/racy")).await }
        });
        started_rx.await.unwrap();
        cache.invalidate([dep::id("post", 42)]).await.unwrap();
        go_tx.send(()).unwrap();
        let (response, body) = first.await.unwrap();
        assert_eq!(
            (x_cache(&response), body.as_str()),
            ("MISS", "rendered"),
            "{name}"
        );
        let (again, _) = send(&app, get_req("/racy")).await;
        assert_eq!(
            x_cache(&again),
            "MISS",
            "{name}: the racy render must not be stored"
        );
        let (third, _) = send(&app, get_req("/racy")).await;
        assert_eq!(x_cache(&third), "HIT", "{name}");
        assert_eq!(blog.runs(), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_statuses_are_stored_when_configured() {
    for (name, cache, _server) in backends().await {
        let blog = Blog::default();
        let layer = CacheLayer::new(cache.clone(), MINUTE).also_status([StatusCode::NOT_FOUND]);
        let app = app(&cache, &blog, layer);
        for expected in ["MISS", "HIT"] {
            let (response, body) = send(&app, get_req("/kind/missing")).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name}");
            assert_eq!(
                (x_cache(&response), body.as_str()),
                (expected, "missing"),
                "{name}"
            );
        }
        assert_eq!(blog.runs(), 1, "{name}");
    }
}

/// Two server processes sharing one Redis: an edit on one drops the page the other cached,
/// over real HTTP on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_in_another_process_drops_the_page_over_http() {
    let server = RedisServer::start();
    let connect = || async {
        MatroskaCache::new(
            RedisBackend::builder(&server.url(), "shared")
                .build()
                .await
                .unwrap(),
        )
    };
    let (serving, editing) = (connect().await, connect().await);
    let blog = Blog::default();
    *blog.title.lock().unwrap() = "Before".into();
    let router = app(&serving, &blog, CacheLayer::new(serving.clone(), MINUTE));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let fetch = |client: &hyper_util::client::legacy::Client<_, Body>| {
        let request = Request::get(format!("http://{address}/posts/9"))
            .body(Body::empty())
            .unwrap();
        let response = client.request(request);
        async move {
            let response = response.await.unwrap();
            let label = response.headers()["x-cache"].to_str().unwrap().to_owned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (label, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        fetch(&client).await,
        ("MISS".into(), "<h1>Before 9</h1>".into())
    );
    assert_eq!(
        fetch(&client).await,
        ("HIT".into(), "<h1>Before 9</h1>".into())
    );
    *blog.title.lock().unwrap() = "After".into();
    assert_eq!(editing.invalidate([dep::id("post", 9)]).await.unwrap(), 1);
    assert_eq!(
        fetch(&client).await,
        ("MISS".into(), "<h1>After 9</h1>".into())
    );
}

/// A purge hook hears of every invalidation, and the keys it purges reach the page's header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_hook_receives_every_invalidation() {
    use futures_util::future::BoxFuture;
    use matroska_cache::Dep;
    use matroska_http::purge::{purging, PurgeHook};

    struct Recorder {
        keys: SurrogateKeys,
        purged: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    }
    impl PurgeHook for Recorder {
        fn purge(&self, deps: Vec<Dep>) -> BoxFuture<'static, ()> {
            let (keys, purged) = (self.keys.purge_keys(&deps), self.purged.clone());
            Box::pin(async move {
                let _ = purged.send(keys);
            })
        }
    }

    let server = RedisServer::start();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let keys = SurrogateKeys::new(Cdn::Cloudflare).fallback("blog");
    let cache = MatroskaCache::builder(
        RedisBackend::builder(&server.url(), "purge")
            .build()
            .await
            .unwrap(),
    )
    .on_invalidate(purging(Recorder {
        keys: keys.clone(),
        purged: tx,
    }))
    .build()
    .unwrap();
    let blog = Blog::default();
    let app = app(
        &cache,
        &blog,
        CacheLayer::new(cache.clone(), MINUTE).surrogate_keys(keys),
    );
    let (page, _) = send(&app, get_req("/posts/4")).await;
    assert_eq!(page.headers()["cache-tag"], "id:post:4");

    cache.invalidate([dep::id("post", 4)]).await.unwrap();
    let purged = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(purged, ["blog", "id:post:4"]);
    // A failed invalidation is reported too: whatever it dropped must be purged.
    drop(server);
    assert!(cache.invalidate([dep::id("post", 5)]).await.is_err());
    let purged = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(purged, ["blog", "id:post:5"]);
}

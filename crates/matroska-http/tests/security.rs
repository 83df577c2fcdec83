//! What one client sends never reaches another client's response, pins Redis memory or
//! makes the handler run at will: the security review's reproductions, on both backends.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, Request};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt as _;
use matroska_cache::{dep, depends_on, MatroskaCache};
use matroska_http::CacheLayer;
use matroska_test_support::RedisServer;
use support::{backends, get_req, send, x_cache};

const MINUTE: Duration = Duration::from_secs(60);

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A handler that reads a request header the key does not hold: what an API reading its
/// key, or a page building links from `X-Forwarded-Host`, does.
async fn echo(State(runs): State<Arc<AtomicUsize>>, headers: HeaderMap) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!(
        "key={} host={} forwarded-host={}",
        read("x-api-key"),
        read("host"),
        read("x-forwarded-host")
    )
}

fn echo_app(layer: CacheLayer, runs: &Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/me", get(echo))
        .route("/", get(echo))
        .with_state(Arc::clone(runs))
        .layer(layer)
}

fn with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_any_header_are_never_shared() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = echo_app(CacheLayer::new(cache.clone(), MINUTE), &runs);
        let (alice, body) = send(&app, with("/me", &[("x-api-key", "alice-key")])).await;
        assert_eq!(
            (x_cache(&alice), body.as_str()),
            ("BYPASS", "key=alice-key host=- forwarded-host=-"),
            "{name}"
        );
        let (bob, body) = send(&app, with("/me", &[("x-api-key", "bob-key")])).await;
        assert_eq!(x_cache(&bob), "BYPASS", "{name}");
        assert!(body.contains("bob-key"), "{name}");
        let (anonymous, body) = send(&app, get_req("/me")).await;
        assert_eq!(x_cache(&anonymous), "MISS", "{name}");
        assert!(!body.contains("alice"), "{name}: {body}");
        for header in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-auth-token",
            "x-access-token",
        ] {
            let (response, _) = send(&app, with("/me", &[(header, "secret")])).await;
            assert_eq!(x_cache(&response), "BYPASS", "{name}: {header}");
        }
        // The list is the application's to set.
        let runs = counter();
        let app = echo_app(
            CacheLayer::new(cache.clone(), MINUTE)
                .credential_headers([HeaderName::from_static("x-tenant-secret")]),
            &runs,
        );
        let (response, _) = send(&app, with("/me", &[("x-tenant-secret", "s")])).await;
        assert_eq!(x_cache(&response), "BYPASS", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_inputs_bypass_unless_the_application_keys_them() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = echo_app(CacheLayer::new(cache.clone(), MINUTE), &runs);
        let (poisoned, body) = send(&app, with("/", &[("x-forwarded-host", "evil.example")])).await;
        assert_eq!(x_cache(&poisoned), "BYPASS", "{name}");
        assert!(body.contains("evil.example"), "{name}");
        let (visitor, body) = send(&app, get_req("/")).await;
        assert_eq!(x_cache(&visitor), "MISS", "{name}");
        assert!(!body.contains("evil"), "{name}: {body}");
        for header in [
            "x-forwarded-proto",
            "x-forwarded-prefix",
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
        ] {
            let (response, body) = send(&app, with("/", &[(header, "x")])).await;
            assert_eq!(x_cache(&response), "BYPASS", "{name}: {header}");
            assert!(!body.contains("evil"), "{name}");
        }
        // A GET with a body bypasses: a handler may read it.
        let body_request = Request::get("/")
            .header(header::CONTENT_LENGTH, "5")
            .body(Body::from("hello"))
            .unwrap();
        let (response, _) = send(&app, body_request).await;
        assert_eq!(x_cache(&response), "BYPASS", "{name}");

        // Keyed: each forwarded host has its own entry. Ignored: shared.
        let runs = counter();
        let app = echo_app(
            CacheLayer::new(cache.clone(), MINUTE)
                .key_headers([HeaderName::from_static("x-forwarded-host")])
                .ignore_headers([HeaderName::from_static("x-forwarded-for")]),
            &runs,
        );
        let labels_bodies = [
            with("/", &[("x-forwarded-host", "evil.example")]),
            with("/", &[("x-forwarded-host", "good.example")]),
            with("/", &[("x-forwarded-host", "evil.example")]),
            with(
                "/",
                &[
                    ("x-forwarded-host", "good.example"),
                    ("x-forwarded-for", "10.0.0.1"),
                ],
            ),
        ];
        let mut seen = Vec::new();
        for request in labels_bodies {
            let (response, body) = send(&app, request).await;
            seen.push(format!("{} {}", x_cache(&response), body));
        }
        assert_eq!(
            seen,
            [
                "MISS key=- host=- forwarded-host=evil.example",
                "MISS key=- host=- forwarded-host=good.example",
                "HIT key=- host=- forwarded-host=evil.example",
                "HIT key=- host=- forwarded-host=good.example",
            ],
            "{name}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_holds_the_scheme_and_the_host() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = echo_app(CacheLayer::new(cache.clone(), MINUTE), &runs);
        let mut seen = Vec::new();
        for host in ["a.example", "b.example", "A.example", "b.example"] {
            let (response, body) = send(&app, with("/", &[("host", host)])).await;
            seen.push(format!("{} {body}", x_cache(&response)));
        }
        assert_eq!(
            seen,
            [
                "MISS key=- host=a.example forwarded-host=-",
                "MISS key=- host=b.example forwarded-host=-",
                "HIT key=- host=a.example forwarded-host=-",
                "HIT key=- host=b.example forwarded-host=-",
            ],
            "{name}"
        );
        let (http, _) = send(&app, get_req("http://c.example/")).await;
        let (https, _) = send(&app, get_req("https://c.example/")).await;
        assert_eq!(
            (x_cache(&http), x_cache(&https)),
            ("MISS", "MISS"),
            "{name}"
        );
        // A Host that is not one cannot be keyed.
        let (response, _) = send(&app, with("/", &[("host", "a.example/x")])).await;
        assert_eq!(x_cache(&response), "BYPASS", "{name}");
    }
}

async fn dashboard(Path(tenant): Path<String>) -> String {
    format!("private dashboard of tenant {tenant}")
}

async fn status(State(which): State<&'static str>) -> String {
    format!("{which} status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_routers_and_other_layers_never_share() {
    for (name, cache, _server) in backends().await {
        let tenants: Router = Router::new().nest(
            "/{tenant}",
            Router::new()
                .route("/dashboard", get(dashboard))
                .layer(CacheLayer::new(cache.clone(), MINUTE)),
        );
        let (acme, body) = send(&tenants, get_req("/acme/dashboard")).await;
        assert_eq!(
            (x_cache(&acme), body.as_str()),
            ("MISS", "private dashboard of tenant acme")
        );
        let (globex, body) = send(&tenants, get_req("/globex/dashboard")).await;
        assert_eq!(
            (x_cache(&globex), body.as_str()),
            ("MISS", "private dashboard of tenant globex"),
            "{name}"
        );
        let (again, body) = send(&tenants, get_req("/acme/dashboard")).await;
        assert_eq!(
            (x_cache(&again), body.as_str()),
            ("HIT", "private dashboard of tenant acme")
        );

        // Two static nests with one layer value each.
        let layer = CacheLayer::new(cache.clone(), MINUTE);
        let nests: Router = Router::new()
            .nest(
                "/internal",
                Router::new()
                    .route("/status", get(status))
                    .with_state("internal")
                    .layer(layer.clone()),
            )
            .nest(
                "/public",
                Router::new()
                    .route("/status", get(status))
                    .with_state("public")
                    .layer(layer),
            );
        send(&nests, get_req("/internal/status")).await;
        let (public, body) = send(&nests, get_req("/public/status")).await;
        assert_eq!(
            (x_cache(&public), body.as_str()),
            ("MISS", "public status"),
            "{name}"
        );

        // Two services on one cache with the same routes: each layer has its own namespace.
        let admin: Router = Router::new()
            .route("/status", get(status))
            .with_state("admin")
            .layer(CacheLayer::new(cache.clone(), MINUTE));
        let site: Router = Router::new()
            .route("/status", get(status))
            .with_state("site")
            .layer(CacheLayer::new(cache.clone(), MINUTE));
        send(&admin, get_req("/status")).await;
        let (response, body) = send(&site, get_req("/status")).await;
        assert_eq!(
            (x_cache(&response), body.as_str()),
            ("MISS", "site status"),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_keys_never_reach_a_page() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = echo_app(
            CacheLayer::new(cache.clone(), MINUTE).key_prefix("http"),
            &runs,
        );
        send(&app, get_req("/")).await;
        // What the layer's keys looked like before: an application (a wiki page named so)
        // writing there changes nothing.
        for key in ["http:-:/", "http:-:-://-/", "2:http:-:-://-/"] {
            cache
                .put(key, "{\"status\":200}\n<script>pwned</script>", [], MINUTE)
                .await
                .unwrap();
        }
        let (response, body) = send(&app, get_req("/")).await;
        assert_eq!(x_cache(&response), "HIT", "{name}");
        assert!(!body.contains("pwned"), "{name}");
    }
}

async fn page(State(runs): State<Arc<AtomicUsize>>) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    depends_on((0..50).map(|i| dep::id("article", i)));
    "front page".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_flood_runs_the_handler_once() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = Router::new()
            .route("/", get(page))
            .with_state(Arc::clone(&runs))
            .layer(CacheLayer::new(cache.clone(), MINUTE));
        send(&app, get_req("/")).await;
        for i in 0..100 {
            let header = if i % 2 == 0 {
                ("pragma", "no-cache")
            } else {
                ("cache-control", "no-cache")
            };
            let (response, _) = send(&app, with("/", &[header])).await;
            assert_eq!(x_cache(&response), "HIT", "{name}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{name}");
    }
}

/// Redis `used_memory` after 20 anonymous requests with 60 KB query strings to a page with
/// 50 dependencies, once the entries are gone: the indexes (which no eviction frees) hold
/// only bounded keys. The review measured 65.7 MB left before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_urls_cost_bounded_index_memory() {
    let server = RedisServer::start();
    let cache = MatroskaCache::redis(&server.url(), "amplify")
        .await
        .unwrap();
    let used_memory = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut server.connection())
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let runs = counter();
    let app = Router::new()
        .route("/", get(page))
        .with_state(Arc::clone(&runs))
        .layer(CacheLayer::new(cache.clone(), MINUTE));
    let before = used_memory();
    for i in 0..20 {
        let uri = format!("/?{i}={}", "q".repeat(60_000));
        let (response, body) = send(&app, get_req(&uri)).await;
        assert_eq!((x_cache(&response), body.as_str()), ("MISS", "front page"));
        let (response, _) = send(&app, get_req(&uri)).await;
        assert_eq!(x_cache(&response), "HIT", "a long URL is still cached");
    }
    // The entries go (as expiry or eviction would take them); the indexes stay.
    let mut connection = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{amplify}:d:*")
        .query(&mut connection)
        .unwrap();
    assert_eq!(keys.len(), 20);
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut connection).unwrap();
    let left = used_memory().saturating_sub(before);
    assert!(
        left < 2 * 1024 * 1024,
        "{left} bytes stay in Redis after the entries are gone"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 20);
}

async fn greeting(State(runs): State<Arc<AtomicUsize>>, headers: HeaderMap) -> impl IntoResponse {
    runs.fetch_add(1, Ordering::SeqCst);
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    (
        [(header::VARY, "Accept-Language")],
        format!("hello in {lang}"),
    )
}

async fn custom_vary(State(runs): State<Arc<AtomicUsize>>) -> impl IntoResponse {
    runs.fetch_add(1, Ordering::SeqCst);
    ([(header::VARY, "X-Theme")], "themed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_are_bounded_and_allow_listed() {
    for (name, cache, _server) in backends().await {
        let runs = counter();
        let app = Router::new()
            .route("/greeting", get(greeting))
            .route("/themed", get(custom_vary))
            .with_state(Arc::clone(&runs))
            .layer(CacheLayer::new(cache.clone(), MINUTE).max_variants(8));
        // Equivalent values are one variant.
        let (_, _) = send(&app, with("/greeting", &[("accept-language", "de, fr")])).await;
        let (same, _) = send(&app, with("/greeting", &[("accept-language", "fr,DE")])).await;
        assert_eq!(x_cache(&same), "HIT", "{name}");

        let puts = cache.stats().puts;
        for i in 0..2000 {
            let lang = format!("en;q=0.{i}");
            let (response, body) =
                send(&app, with("/greeting", &[("accept-language", &lang)])).await;
            assert_eq!(body, format!("hello in {lang}"), "{name}");
            assert_ne!(x_cache(&response), "HIT", "{name}");
        }
        let stored = cache.stats().puts - puts;
        assert!(stored < 8, "{name}: {stored} more variants stored");
        let (over, _) = send(&app, with("/greeting", &[("accept-language", "nl")])).await;
        assert_eq!(x_cache(&over), "BYPASS", "{name}");

        // A header not on the allow-list: never stored.
        for _ in 0..2 {
            let (response, _) = send(&app, get_req("/themed")).await;
            assert_eq!(x_cache(&response), "MISS", "{name}");
        }
    }
}

async fn account(State(runs): State<Arc<AtomicUsize>>) -> impl IntoResponse {
    runs.fetch_add(1, Ordering::SeqCst);
    (
        [(header::VARY, "Accept-Language")],
        "your account".to_owned(),
    )
}

/// No secret from a request (a session cookie, a `per_user` identity, a `Vary` value) lands
/// in a Redis key name or value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_redis() {
    let server = RedisServer::start();
    let cache = MatroskaCache::redis(&server.url(), "vc").await.unwrap();
    let runs = counter();
    let app = Router::new()
        .route("/account", get(account))
        .with_state(Arc::clone(&runs))
        .layer(CacheLayer::new(cache.clone(), MINUTE).per_user(|parts| {
            let cookie = parts.headers.get(header::COOKIE)?.to_str().ok()?;
            // A verified session (the test's sessions are all valid).
            cookie.strip_prefix("session=").map(str::to_owned)
        }));
    for _ in 0..2 {
        let request = with(
            "/account",
            &[
                ("cookie", "session=SECRET-SESSION-TOKEN-1"),
                ("accept-language", "SECRET-LANGUAGE"),
            ],
        );
        send(&app, request).await;
    }
    let request = with(
        "/account",
        &[
            ("cookie", "session=SECRET-SESSION-TOKEN-1"),
            ("accept-language", "SECRET-OTHER-LANGUAGE"),
        ],
    );
    let (response, _) = send(&app, request).await;
    assert_eq!(x_cache(&response), "MISS");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let mut connection = server.connection();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert!(keys.len() >= 2, "the entries are there");
    for key in keys {
        assert!(
            !String::from_utf8_lossy(&key).contains("SECRET"),
            "{}",
            String::from_utf8_lossy(&key)
        );
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut connection).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut connection).unwrap()],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut connection)
                .unwrap(),
            _ => Vec::new(),
        };
        for value in values {
            assert!(!String::from_utf8_lossy(&value).contains("SECRET"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_bypasses_even_with_a_cached_page() {
    for (name, cache, _server) in backends().await {
        let revoked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sessions = Arc::clone(&revoked);
        let runs = counter();
        let app = Router::new()
            .route("/account", get(account))
            .with_state(Arc::clone(&runs))
            .layer(
                CacheLayer::new(cache.clone(), MINUTE).per_user_async(move |parts| {
                    let sessions = Arc::clone(&sessions);
                    let token = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    async move {
                        // A session store lookup, on every request.
                        tokio::task::yield_now().await;
                        let token = token?;
                        let revoked = sessions.lock().unwrap().contains(&token);
                        (!revoked).then_some(token)
                    }
                    .boxed()
                }),
            );
        let as_alice = || with("/account", &[("authorization", "alice")]);
        let (first, _) = send(&app, as_alice()).await;
        let (second, _) = send(&app, as_alice()).await;
        assert_eq!(
            (x_cache(&first), x_cache(&second)),
            ("MISS", "HIT"),
            "{name}"
        );
        revoked.lock().unwrap().push("alice".into());
        let (after, _) = send(&app, as_alice()).await;
        assert_eq!(x_cache(&after), "BYPASS", "{name}");
    }
}

/// A streamed body (no known length) reaches the client as it comes: the handler sends its
/// next chunk only after the client has read the first (a layer that held the body until
/// the end would never finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_as_they_come() {
    for (name, cache, _server) in backends().await {
        let (read_tx, read_rx) = tokio::sync::watch::channel(false);
        let app = Router::new()
            .route(
                "/feed",
                get(move || {
                    let mut read = read_rx.clone();
                    async move {
                        let first = futures_util::stream::once(async {
                            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"step\":1}\n"))
                        });
                        let rest = futures_util::stream::once(async move {
                            let _ = read.wait_for(|read| *read).await;
                            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"step\":2}\n"))
                        });
                        (
                            [(header::CONTENT_TYPE, "application/x-ndjson")],
                            Body::from_stream(futures_util::StreamExt::chain(first, rest)),
                        )
                    }
                }),
            )
            .layer(CacheLayer::new(cache.clone(), MINUTE));
        let first_chunk = async {
            let response = tower::ServiceExt::oneshot(app, get_req("/feed"))
                .await
                .unwrap();
            assert_eq!(response.headers()["x-cache"], "MISS", "{name}");
            let mut body = response.into_body();
            let first = http_body_util::BodyExt::frame(&mut body).await;
            (first.unwrap().unwrap(), body)
        };
        // Not a timing assertion: without the fix this never ends (the handler waits for
        // the client, the layer for the handler).
        let (first, body) = tokio::time::timeout(Duration::from_secs(30), first_chunk)
            .await
            .expect("the first chunk came before the stream ended");
        assert_eq!(first.into_data().unwrap(), "{\"step\":1}\n", "{name}");
        read_tx.send(true).unwrap();
        let rest = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(rest, "{\"step\":2}\n", "{name}");
    }
}

async fn shared_cache_hint(
    axum::extract::Path(kind): axum::extract::Path<String>,
) -> impl IntoResponse {
    depends_on([dep::id("user", 42)]);
    let (name, value) = match kind.as_str() {
        "s-maxage" => ("cache-control", "public, s-maxage=0"),
        "surrogate" => ("surrogate-control", "no-store"),
        "cdn" => ("cdn-cache-control", "private"),
        _ => ("x-plain", "1"),
    };
    ([(HeaderName::from_static(name), value)], kind)
}

/// Responses a handler keeps out of shared caches are not stored; surrogate keys (which
/// name dependencies) go only on shared entries, and only to the requests the application
/// says come from its CDN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_shared_caches_may_not_keep_is_not_kept() {
    for (name, cache, _server) in backends().await {
        let app = Router::new()
            .route("/hint/{kind}", get(shared_cache_hint))
            .layer(
                CacheLayer::new(cache.clone(), MINUTE)
                    .surrogate_keys(matroska_http::SurrogateKeys::new(
                        matroska_http::Cdn::Fastly,
                    ))
                    .surrogate_keys_if(|parts| parts.headers.contains_key("x-from-cdn"))
                    .per_user(|parts| {
                        Some(
                            parts
                                .headers
                                .get("authorization")?
                                .to_str()
                                .ok()?
                                .to_owned(),
                        )
                    }),
            );
        for kind in ["s-maxage", "surrogate", "cdn"] {
            let uri = format!("/hint/{kind}");
            send(&app, get_req(&uri)).await;
            let (again, _) = send(&app, get_req(&uri)).await;
            assert_eq!(x_cache(&again), "MISS", "{name}: {kind} must not be stored");
        }
        let (direct, _) = send(&app, get_req("/hint/plain")).await;
        assert!(!direct.headers().contains_key("surrogate-key"), "{name}");
        let (via_cdn, _) = send(&app, with("/hint/plain", &[("x-from-cdn", "1")])).await;
        assert_eq!(x_cache(&via_cdn), "HIT", "{name}");
        assert_eq!(via_cdn.headers()["surrogate-key"], "id:user:42", "{name}");
        let (personal, _) = send(
            &app,
            with(
                "/hint/plain",
                &[("x-from-cdn", "1"), ("authorization", "alice")],
            ),
        )
        .await;
        assert_eq!(x_cache(&personal), "MISS", "{name}");
        assert!(!personal.headers().contains_key("surrogate-key"), "{name}");
    }
}

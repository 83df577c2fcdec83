//! A handler's `Cache-Control: stale-while-revalidate` and `stale-if-error`, on the in-memory
//! backend and on a real `redis-server`: past the layer's TTL the page is served at once
//! while one background request renders it again; a failing handler is answered with the
//! expired page, never with an invalidated one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use matroska_cache::{dep, depends_on, MatroskaCache};
use matroska_http::CacheLayer;
use support::{backends, get_req, send, x_cache};

mod support;

/// The layer's TTL: short, so tests can wait past it.
const TTL: Duration = Duration::from_millis(200);

#[derive(Clone, Default)]
struct Page {
    runs: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn render(State(page): State<Page>, cache_control: &'static str) -> impl IntoResponse {
    if page.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, cache_control)],
            "down".to_owned(),
        );
    }
    let run = page.runs.fetch_add(1, Ordering::SeqCst);
    depends_on([dep::tag("page")]);
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, cache_control)],
        format!("v{run}"),
    )
}

fn app(cache: &MatroskaCache, page: &Page) -> Router {
    Router::new()
        .route(
            "/swr",
            get(|state| render(state, "public, stale-while-revalidate=60")),
        )
        .route(
            "/sie",
            get(|state| render(state, "public, stale-if-error=600")),
        )
        .route("/plain", get(|state| render(state, "public")))
        .with_state(page.clone())
        .layer(CacheLayer::new(cache.clone(), TTL))
}

async fn past_the_ttl() {
    tokio::time::sleep(TTL * 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_and_refreshes_in_the_background() {
    for (name, cache, _server) in backends().await {
        let page = Page::default();
        let app = app(&cache, &page);
        let (first, body) = send(&app, get_req("/swr")).await;
        assert_eq!((x_cache(&first), body.as_str()), ("MISS", "v0"), "{name}");
        past_the_ttl().await;
        // Past the TTL, within the window: the old page at once, a refresh behind it.
        let (stale, body) = send(&app, get_req("/swr")).await;
        assert_eq!((x_cache(&stale), body.as_str()), ("HIT", "v0"), "{name}");
        let mut refreshed = String::new();
        for _ in 0..200 {
            let (response, body) = send(&app, get_req("/swr")).await;
            assert_eq!(x_cache(&response), "HIT", "{name}");
            refreshed = body;
            if refreshed == "v1" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(refreshed, "v1", "{name}");
        assert_eq!(page.runs.load(Ordering::SeqCst), 2, "{name}: one refresh");
        assert_eq!(cache.stats().refreshes, 1, "{name}");
        // An invalidation drops it, window and all.
        assert_eq!(
            cache.invalidate([dep::tag("page")]).await.unwrap(),
            1,
            "{name}"
        );
        let (after, body) = send(&app, get_req("/swr")).await;
        assert_eq!((x_cache(&after), body.as_str()), ("MISS", "v2"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_a_failing_handler_with_the_expired_page() {
    for (name, cache, _server) in backends().await {
        let page = Page::default();
        let app = app(&cache, &page);
        for path in ["/sie", "/plain"] {
            let (first, _) = send(&app, get_req(path)).await;
            assert_eq!(x_cache(&first), "MISS", "{name} {path}");
        }
        past_the_ttl().await;
        page.failing.store(true, Ordering::SeqCst);
        let (stale, body) = send(&app, get_req("/sie")).await;
        assert_eq!(
            (stale.status(), x_cache(&stale), body.as_str()),
            (StatusCode::OK, "STALE", "v0"),
            "{name}"
        );
        assert_eq!(cache.stats().fail_safe_hits, 1, "{name}");
        // Without the directive, the handler's error goes through.
        let (plain, _) = send(&app, get_req("/plain")).await;
        assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
        // An invalidated page is never the fallback.
        assert_eq!(
            cache.invalidate([dep::tag("page")]).await.unwrap(),
            1,
            "{name}"
        );
        let (after, _) = send(&app, get_req("/sie")).await;
        assert_eq!(after.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
    }
}

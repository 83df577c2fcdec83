//! The blog over real HTTP on loopback, on an in-memory cache and on a real `redis-server`:
//! pages are cached, and an edit drops every page that showed the article.

mod support;

use axum::http::StatusCode;
use matroska_cache::{MatroskaCache, RedisBackend};
use matroska_test_support::RedisServer;
use support::{client, edit, fetch, get, start};

async fn pages_are_cached_and_an_edit_drops_them(cache: MatroskaCache, name: &str) {
    let blog = start(cache).await;
    let client = client();
    let (status, label, body) = fetch(&client, get(&blog.url("/"))).await;
    assert_eq!((status, label.as_str()), (StatusCode::OK, "MISS"), "{name}");
    assert!(body.contains("Dependency tracking"), "{name}");
    let (_, label, _) = fetch(&client, get(&blog.url("/"))).await;
    assert_eq!(label, "HIT", "{name}");
    let (_, label, body) = fetch(&client, get(&blog.url("/articles/2"))).await;
    assert_eq!(label, "MISS", "{name}");
    assert!(
        body.contains("<h1 id=\"title\">Dependency tracking</h1>"),
        "{name}"
    );
    let (_, label, _) = fetch(&client, get(&blog.url("/articles/2"))).await;
    assert_eq!(label, "HIT", "{name}");
    let (_, label, _) = fetch(&client, get(&blog.url("/articles/3"))).await;
    assert_eq!(label, "MISS", "{name}");

    let (status, _, _) = fetch(
        &client,
        edit(
            &blog.url("/articles/2"),
            "Tracked <dependencies>",
            "Edited.",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{name}");
    // The article's page and the list that shows its title are dropped; article 3 is not.
    let (_, label, body) = fetch(&client, get(&blog.url("/articles/2"))).await;
    assert_eq!(label, "MISS", "{name}");
    assert!(
        body.contains("Tracked &lt;dependencies&gt;"),
        "{name}: escaped, new"
    );
    let (_, label, body) = fetch(&client, get(&blog.url("/"))).await;
    assert_eq!(label, "MISS", "{name}");
    assert!(body.contains("Tracked &lt;dependencies&gt;"), "{name}");
    let (_, label, _) = fetch(&client, get(&blog.url("/articles/3"))).await;
    assert_eq!(label, "HIT", "{name}");

    // Bad edits are refused and change nothing.
    let (status, _, _) = fetch(&client, edit(&blog.url("/articles/99"), "x", "y")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
    let (status, _, _) = fetch(&client, edit(&blog.url("/articles/3"), " ", "y")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
    let (_, label, _) = fetch(&client, get(&blog.url("/articles/3"))).await;
    assert_eq!(label, "HIT", "{name}");
    let (status, label, _) = fetch(&client, get(&blog.url("/articles/99"))).await;
    assert_eq!(
        (status, label.as_str()),
        (StatusCode::NOT_FOUND, "MISS"),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_in_memory_cache() {
    pages_are_cached_and_an_edit_drops_them(MatroskaCache::in_memory(), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(&server.url(), "blog")
        .build()
        .await
        .unwrap();
    pages_are_cached_and_an_edit_drops_them(MatroskaCache::new(backend), "redis").await;
}

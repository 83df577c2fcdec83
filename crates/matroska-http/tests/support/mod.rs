//! What the layer's tests share: the backends every test runs on, and sending a request.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt as _;
use matroska_cache::{MatroskaCache, MemoryBackend, RedisBackend};
use matroska_test_support::RedisServer;
use tower::ServiceExt as _;

/// The caches every test runs on; the server lives as long as the cache is used.
pub async fn backends() -> Vec<(&'static str, MatroskaCache, Option<RedisServer>)> {
    let memory = MatroskaCache::new(MemoryBackend::builder().build().unwrap());
    let server = RedisServer::start();
    let redis = MatroskaCache::new(
        RedisBackend::builder(&server.url(), "http-test")
            .build()
            .await
            .unwrap(),
    );
    vec![("memory", memory, None), ("redis", redis, Some(server))]
}

pub async fn send(app: &Router, request: Request<Body>) -> (Response<()>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn x_cache(response: &Response<()>) -> &str {
    response.headers()["x-cache"].to_str().unwrap()
}

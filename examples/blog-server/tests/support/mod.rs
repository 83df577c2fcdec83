//! Starts the blog on a free loopback port, with a log of the requests it answered.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use matroska_cache::MatroskaCache;

/// One request the server answered, as the network saw it (outside the cache layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// Whether the request was conditional (`If-None-Match`).
    pub conditional: bool,
    pub status: StatusCode,
    pub x_cache: String,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let conditional = request.headers().contains_key(header::IF_NONE_MATCH);
    let response = next.run(request).await;
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    log.lock().unwrap().push(Seen {
        method,
        path,
        conditional,
        status: response.status(),
        x_cache,
    });
    response
}

/// A running blog: its address, its request log, and its database's directory.
pub struct Running {
    pub address: SocketAddr,
    pub log: Log,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The requests answered so far, from the `skip`-th on.
    pub fn seen(&self, skip: usize) -> Vec<Seen> {
        self.log.lock().unwrap()[skip..].to_vec()
    }

    pub fn seen_count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

pub async fn start(cache: MatroskaCache) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("blog.db").display());
    let db = blog_server::open_database(&url).await.unwrap();
    let log = Log::default();
    let app = blog_server::router(db, cache)
        .layer(axum::middleware::from_fn_with_state(log.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Running {
        address,
        log,
        _dir: dir,
    }
}

pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends `request`; the response's status, `x-cache` and body.
pub async fn fetch(
    client: &Client<HttpConnector, Body>,
    request: axum::http::Request<Body>,
) -> (StatusCode, String, String) {
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, x_cache, String::from_utf8(body.to_vec()).unwrap())
}

pub fn get(url: &str) -> axum::http::Request<Body> {
    axum::http::Request::get(url).body(Body::empty()).unwrap()
}

/// The form post of an edit.
pub fn edit(url: &str, title: &str, body: &str) -> axum::http::Request<Body> {
    let form = serde_urlencoded::to_string([("title", title), ("body", body)]).unwrap();
    axum::http::Request::post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap()
}

//! A real browser against the blog: headless Chromium (`scripts/test` installs Debian's
//! `chromium` when it is missing).
//!
//! 1. The first load of an article is a MISS; the page's own `HEAD` request (it shows the
//!    layer's `x-cache` in its footer; the browser makes it conditional) is served from the
//!    `GET`'s entry, a HIT.
//! 2. Loading it again in the same browser profile revalidates with the browser's own
//!    conditional request (`If-None-Match`, from its HTTP cache: the pages say `no-cache`),
//!    which the layer answers with a 304, a HIT, without running the handler.
//! 3. After an edit, the browser's conditional request gets the new page (200, MISS), and
//!    the new title is in the DOM.
//!
//! With `MATROSKA_SCREENSHOT=<path>` it also saves a screenshot of the page (the README's).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use matroska_cache::MatroskaCache;
use support::{client, edit, fetch, start, Seen};

/// The Chromium binary: `$CHROMIUM`, or the first of Debian's and others' names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("no Chromium found: install it (sudo apt-get install chromium) or set CHROMIUM");
}

/// How long one Chromium run may take (it takes a second or two).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// Headless Chromium with `profile`, `extra` flags, `url` last; its standard output.
async fn run_chromium(profile: &Path, extra: &[&str], url: &str) -> String {
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox", // CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            // Lets the page's scripts (its HEAD request) run before the DOM is dumped.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish within {CHROMIUM_TIMEOUT:?}"))
        .expect("Chromium runs");
    assert!(
        output.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The requests for the article's page in `seen`, without the favicon's.
fn page_requests(seen: Vec<Seen>) -> Vec<(Method, bool, StatusCode, String)> {
    seen.into_iter()
        .filter(|s| s.path == "/articles/1")
        .map(|s| (s.method, s.conditional, s.status, s.x_cache))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_miss_then_revalidates_then_sees_the_edit() {
    let blog = start(MatroskaCache::in_memory()).await;
    let url = blog.url("/articles/1");
    let profile = tempfile::tempdir().unwrap();
    let browse = |skip: usize| {
        let (profile, url) = (profile.path().to_owned(), url.clone());
        async move { (run_chromium(&profile, &["--dump-dom"], &url).await, skip) }
    };
    let ok = StatusCode::OK;

    let (dom, skip) = browse(blog.seen_count()).await;
    assert!(dom.contains("<h1 id=\"title\">Hello, cache</h1>"), "{dom}");
    assert!(
        dom.contains("x-cache: HIT"),
        "the page's HEAD request: {dom}"
    );
    let seen = page_requests(blog.seen(skip));
    assert_eq!(
        seen.first(),
        Some(&(Method::GET, false, ok, "MISS".to_owned())),
        "{seen:?}"
    );
    // The page's HEAD request: the browser makes it conditional itself (it has the GET's
    // response), so a 304 or a 200, from the cache either way.
    assert!(
        seen.iter()
            .any(|(method, _, _, label)| method == Method::HEAD && label == "HIT"),
        "{seen:?}"
    );

    let (dom, skip) = browse(blog.seen_count()).await;
    assert!(dom.contains("<h1 id=\"title\">Hello, cache</h1>"), "{dom}");
    let seen = page_requests(blog.seen(skip));
    assert_eq!(
        seen.first(),
        Some(&(
            Method::GET,
            true,
            StatusCode::NOT_MODIFIED,
            "HIT".to_owned()
        )),
        "the browser revalidates and gets a 304: {seen:?}"
    );

    let (status, _, _) = fetch(
        &client(),
        edit(
            &url,
            "Hello, edited",
            "Changed while the browser had the page.",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (dom, skip) = browse(blog.seen_count()).await;
    assert!(dom.contains("<h1 id=\"title\">Hello, edited</h1>"), "{dom}");
    let seen = page_requests(blog.seen(skip));
    assert_eq!(
        seen.first(),
        Some(&(Method::GET, true, ok, "MISS".to_owned())),
        "after the edit the browser's conditional request gets the new page: {seen:?}"
    );

    if let Some(path) = std::env::var_os("MATROSKA_SCREENSHOT") {
        let path = PathBuf::from(path);
        let flag = format!("--screenshot={}", path.display());
        let size = ["--window-size=900,620", "--hide-scrollbars"];
        run_chromium(profile.path(), &[&flag, size[0], size[1]], &url).await;
        assert!(path.exists(), "no screenshot at {}", path.display());
    }
}

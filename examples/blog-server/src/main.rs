//! `blog-server`: the example blog on `127.0.0.1:3000`.
//!
//! ```text
//! cargo run -p blog-server                                  # in-memory cache, a temporary SQLite file
//! cargo run -p blog-server -- --redis redis://127.0.0.1/ --db 'sqlite://blog.db?mode=rwc' --port 8080
//! ```

use matroska_cache::MatroskaCache;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cache = match arg("--redis") {
        Some(url) => MatroskaCache::redis(&url, "blog").await?,
        None => MatroskaCache::in_memory(),
    };
    let db_url = match arg("--db") {
        Some(url) => url,
        None => {
            let path = std::env::temp_dir().join(format!("blog-server-{}.db", std::process::id()));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let port: u16 = arg("--port").map_or(Ok(3000), |p| p.parse())?;
    let db = blog_server::open_database(&db_url).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "blog-server: http://{} (database {db_url})",
        listener.local_addr()?
    );
    axum::serve(listener, blog_server::router(db, cache))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

//! A blog that caches its article list and article pages, and drops exactly what a change
//! makes stale.
//!
//! ```text
//! cargo run --example demo                                  # in-memory cache
//! cargo run --example demo -- --redis redis://127.0.0.1/    # a shared Redis cache
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use matroska_cache::{dep, Dep, MatroskaCache};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Author {
    id: u32,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Article {
    id: u32,
    title: String,
    author: Author,
}

/// A stand-in for the database.
struct Db {
    authors: Mutex<BTreeMap<u32, String>>,
    articles: BTreeMap<u32, (String, u32)>,
}

impl Db {
    fn new() -> Self {
        Db {
            authors: Mutex::new(BTreeMap::from([
                (1, "kolypto".into()),
                (2, "ferris".into()),
            ])),
            articles: BTreeMap::from([
                (1, ("Python".into(), 1)),
                (2, ("Cache".into(), 1)),
                (3, ("Rust".into(), 2)),
            ]),
        }
    }

    fn article(&self, id: u32) -> Article {
        let (title, author_id) = self.articles[&id].clone();
        let name = self.authors.lock().unwrap()[&author_id].clone();
        Article {
            id,
            title,
            author: Author {
                id: author_id,
                name,
            },
        }
    }
}

/// What an article depends on: itself and its author.
fn deps_of(article: &Article) -> [Dep; 2] {
    [
        dep::id("article", article.id),
        dep::id("author", article.author.id),
    ]
}

async fn articles_list(
    cache: &MatroskaCache,
    db: &Db,
) -> Result<Vec<Article>, matroska_cache::Error> {
    if let Some(list) = cache.get::<Vec<Article>>("articles-list").await? {
        println!("  hit:  articles-list came from the cache");
        return Ok(list);
    }
    println!("  miss: articles-list is not cached; querying the database");
    let list: Vec<Article> = db.articles.keys().map(|&id| db.article(id)).collect();
    let mut deps: Vec<Dep> = list.iter().flat_map(deps_of).collect();
    deps.sort();
    deps.dedup();
    let shown: Vec<String> = deps.iter().map(ToString::to_string).collect();
    println!("        stored with its dependencies {}", shown.join(", "));
    cache
        .put("articles-list", &list, deps, Duration::from_secs(600))
        .await?;
    Ok(list)
}

async fn article_page(
    cache: &MatroskaCache,
    db: &Db,
    id: u32,
) -> Result<String, matroska_cache::Error> {
    let key = format!("article:{id}:html");
    if let Some(html) = cache.get::<String>(&key).await? {
        println!("  hit:  {key} came from the cache");
        return Ok(html);
    }
    println!("  miss: {key} is not cached; rendering it");
    let article = db.article(id);
    let html = format!(
        "<h1>{}</h1><p>by {}</p>",
        article.title, article.author.name
    );
    cache
        .put(&key, &html, deps_of(&article), Duration::from_secs(600))
        .await?;
    Ok(html)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cache = match args.as_slice() {
        [] => {
            println!("Using the in-memory cache (pass --redis URL for Redis).");
            MatroskaCache::in_memory()
        }
        [flag, url] if flag == "--redis" => {
            println!("Using Redis, every key under the prefix \"matroska-demo\".");
            MatroskaCache::redis(url, "matroska-demo").await?
        }
        _ => {
            eprintln!("usage: demo [--redis URL]");
            std::process::exit(2);
        }
    };
    let db = Db::new();
    // A clean slate, in case an earlier run left entries in a shared Redis.
    cache.delete("articles-list").await?;
    for id in [1, 3] {
        cache.delete(&format!("article:{id}:html")).await?;
    }

    println!("\n1. The first visit computes everything:");
    let list = articles_list(&cache, &db).await?;
    println!("        {} articles", list.len());
    article_page(&cache, &db, 1).await?;
    article_page(&cache, &db, 3).await?;

    println!("\n2. The second visit is served from the cache:");
    articles_list(&cache, &db).await?;
    article_page(&cache, &db, 1).await?;
    article_page(&cache, &db, 3).await?;

    println!("\n3. kolypto renames himself; the application invalidates id:author:1:");
    db.authors
        .lock()
        .unwrap()
        .insert(1, "kolypto (Mark)".into());
    let dropped = cache.invalidate([dep::id("author", 1)]).await?;
    println!(
        "        {dropped} entries dropped: the list and article 1's page, which show his name"
    );

    println!("\n4. The next visit recomputes exactly what changed:");
    let list = articles_list(&cache, &db).await?;
    println!("        article 1 is now by {:?}", list[0].author.name);
    article_page(&cache, &db, 1).await?;
    article_page(&cache, &db, 3).await?;

    let stats = cache.stats();
    println!(
        "\nhits {}, misses {}, puts {}, invalidations {}, entries dropped {}",
        stats.hits, stats.misses, stats.puts, stats.invalidations, stats.dropped
    );
    Ok(())
}

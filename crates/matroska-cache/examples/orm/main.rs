//! The whole SeaORM story: a cached list of posts (with each post and its tags as
//! dependencies), a transaction that renames a post, and the cache dropping the list only
//! once the rename is committed.
//!
//! ```text
//! cargo run --example orm --features sea-orm                 # in-memory cache
//! cargo run --example orm --features sea-orm -- --redis URL  # Redis
//! ```

use std::time::Duration;

use matroska_cache::orm::{model_deps, CacheTransaction};
use matroska_cache::MatroskaCache;
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryOrder, Set,
};

mod entities;

use entities::{post, post_tag};

type Page = Vec<(post::Model, Vec<post_tag::Model>)>;

/// The front page, read through the cache: on a miss, the posts and their tags are read
/// and cached with every row they came from as a dependency.
async fn front_page(cache: &MatroskaCache, db: &DatabaseConnection) -> Page {
    let ttl = Duration::from_secs(600);
    cache
        .get_or_compute("front-page", ttl, || async {
            println!("  (cache miss: reading the database)");
            let posts = post::Entity::find()
                .order_by_asc(post::Column::Id)
                .all(db)
                .await?;
            let tags = post_tag::Entity::find().all(db).await?;
            let mut deps = model_deps(&posts);
            deps.extend(model_deps(&tags));
            let page: Page = posts
                .into_iter()
                .map(|p| {
                    let mine = tags.iter().filter(|t| t.post_id == p.id).cloned().collect();
                    (p, mine)
                })
                .collect();
            Ok::<_, sea_orm::DbErr>((page, deps))
        })
        .await
        .expect("the front page")
}

fn show(page: &Page) {
    for (post, tags) in page {
        let tags: Vec<&str> = tags.iter().map(|t| t.tag.as_str()).collect();
        println!("  #{} {:?} {:?}", post.id, post.title, tags);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cache = match args.iter().position(|a| a == "--redis") {
        Some(i) => {
            let url = args.get(i + 1).ok_or("--redis takes a URL")?;
            MatroskaCache::redis(url, "orm-example").await?
        }
        None => MatroskaCache::in_memory(),
    };

    let dir = std::env::temp_dir().join(format!("matroska-orm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // SeaORM gives SQLite one connection by default; readers need their own while the
    // transaction holds one.
    let mut options = ConnectOptions::new(format!(
        "sqlite://{}?mode=rwc",
        dir.join("blog.db").display()
    ));
    options.max_connections(4);
    let db = Database::connect(options).await?;
    for sql in [
        "PRAGMA journal_mode=WAL",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
        "CREATE TABLE post_tags (post_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (post_id, tag))",
        "INSERT INTO posts (id, title) VALUES (1, 'Hello'), (2, 'Caching')",
        "INSERT INTO post_tags (post_id, tag) VALUES (1, 'intro'), (2, 'rust'), (2, 'redis')",
    ] {
        db.execute_unprepared(sql).await?;
    }

    println!("First read:");
    show(&front_page(&cache, &db).await);
    println!("Second read (from the cache):");
    show(&front_page(&cache, &db).await);

    println!("A transaction renames post 2 and drops its 'redis' tag...");
    let mut txn = CacheTransaction::begin(&db, &cache).await?;
    let renamed = post::ActiveModel {
        id: Set(2),
        title: Set("Caching, correctly".into()),
    }
    .update(&*txn)
    .await?;
    txn.invalidate_model(&renamed);
    let gone = post_tag::Model {
        post_id: 2,
        tag: "redis".into(),
    };
    post_tag::Entity::delete_by_id((2, "redis".to_owned()))
        .exec(&*txn)
        .await?;
    txn.invalidate_model(&gone);
    println!("  queued: {:?}", txn.queued());

    println!("Read during the transaction (still the committed data):");
    show(&front_page(&cache, &db).await);

    let dropped = txn.commit().await?;
    println!("Committed; the cache dropped {dropped} entries. Read after the commit:");
    show(&front_page(&cache, &db).await);

    db.close().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

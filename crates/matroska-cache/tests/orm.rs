//! SeaORM: model dependencies, and invalidation after commit, against SQLite through the
//! ORM, on both cache backends.
#![cfg(feature = "sea-orm")]

mod support;

use std::time::Duration;

use matroska_cache::orm::{model_dep, model_deps, CacheTransaction, CommitError};
use matroska_cache::{dep, MatroskaCache};
use matroska_test_support::RedisServer;
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryOrder, Set,
};
use support::Harness;
use tokio::sync::oneshot;

const TTL: Duration = Duration::from_secs(600);

// The example's entities: posts, and tags with a composite primary key.
#[path = "../examples/orm/entities.rs"]
mod entities;

use entities::{post, post_tag};

/// A SQLite database in a temporary file, in WAL mode so readers on other connections see
/// the last committed state while a write transaction is open.
async fn database() -> (tempfile::TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("blog.db").display());
    // SeaORM gives SQLite one connection by default; readers need their own while a
    // transaction holds one.
    let mut options = ConnectOptions::new(url);
    options.max_connections(4);
    let db = Database::connect(options).await.unwrap();
    for sql in [
        "PRAGMA journal_mode=WAL",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
        "CREATE TABLE post_tags (post_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (post_id, tag))",
        "INSERT INTO posts (id, title) VALUES (1, 'Hello'), (2, 'Caching')",
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
    (dir, db)
}

/// The cached list of posts, computed from the database through the read-through path.
async fn list(cache: &MatroskaCache, db: &DatabaseConnection) -> Vec<post::Model> {
    cache
        .get_or_compute("posts", TTL, || async {
            let posts = post::Entity::find()
                .order_by_asc(post::Column::Id)
                .all(db)
                .await?;
            let deps = model_deps(&posts);
            Ok::<_, sea_orm::DbErr>((posts, deps))
        })
        .await
        .unwrap()
}

async fn rename(txn: &CacheTransaction, id: i32, title: &str) -> post::Model {
    post::ActiveModel {
        id: Set(id),
        title: Set(title.into()),
    }
    .update(&**txn)
    .await
    .unwrap()
}

#[tokio::test]
async fn model_dependencies_match_dep_pk() {
    let (_dir, db) = database().await;
    let posts = post::Entity::find()
        .order_by_asc(post::Column::Id)
        .all(&db)
        .await
        .unwrap();
    assert_eq!(model_dep(&posts[0]), dep::pk("posts", 1));
    assert_eq!(
        model_deps(posts.iter().chain(&posts)),
        [dep::pk("posts", 1), dep::pk("posts", 2)]
    );
    let tag = post_tag::Model {
        post_id: 2,
        tag: "it's".into(),
    };
    assert_eq!(model_dep(&tag), dep::pk("post_tags", (2, "it's")));
}

/// The whole story: a reader re-caches during the transaction (old data); the commit drops
/// it; the next read sees the new data.
async fn invalidation_waits_for_the_commit(h: Harness) {
    let (_dir, db) = database().await;
    let cache = &h.cache;
    assert_eq!(list(cache, &db).await[0].title, "Hello");

    let mut txn = CacheTransaction::begin(&db, cache).await.unwrap();
    let renamed = rename(&txn, 1, "Hello, world").await;
    txn.invalidate_model(&renamed);
    assert_eq!(txn.queued(), [dep::pk("posts", 1)]);

    // Before the commit, readers still get (and re-cache) the committed data.
    cache.delete("posts").await.unwrap();
    assert_eq!(list(cache, &db).await[0].title, "Hello");
    assert!(cache.has("posts").await.unwrap());

    assert_eq!(txn.commit().await.unwrap(), 1);
    assert!(!cache.has("posts").await.unwrap());
    assert_eq!(list(cache, &db).await[0].title, "Hello, world");
}

/// A reader that read the old data before the commit and stores after the invalidation is
/// refused by the fence: the old list is not cached.
async fn in_flight_reader_cannot_store_old_data(h: Harness) {
    let (_dir, db) = database().await;
    let cache = h.cache.clone();
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let reader = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("posts", TTL, || async move {
                    let posts = post::Entity::find()
                        .order_by_asc(post::Column::Id)
                        .all(&db)
                        .await?;
                    read_tx.send(()).unwrap(); // read the old data...
                    go_rx.await.unwrap(); // ...and store only after the commit
                    let deps = model_deps(&posts);
                    Ok::<_, sea_orm::DbErr>((posts, deps))
                })
                .await
                .unwrap()
        })
    };
    read_rx.await.unwrap();
    let mut txn = CacheTransaction::begin(&db, &cache).await.unwrap();
    let renamed = rename(&txn, 1, "Renamed").await;
    txn.invalidate_model(&renamed);
    txn.commit().await.unwrap();
    go_tx.send(()).unwrap();

    // The reader returns what it read, but did not cache it.
    assert_eq!(reader.await.unwrap()[0].title, "Hello");
    assert!(
        !cache.has("posts").await.unwrap(),
        "the old list was cached"
    );
    assert_eq!(list(&cache, &db).await[0].title, "Renamed");
}

/// A rolled-back (or dropped) transaction changes nothing and invalidates nothing.
async fn rollback_invalidates_nothing(h: Harness) {
    let (_dir, db) = database().await;
    let cache = &h.cache;
    list(cache, &db).await;

    let mut txn = CacheTransaction::begin(&db, cache).await.unwrap();
    let renamed = rename(&txn, 1, "Never").await;
    txn.invalidate_model(&renamed);
    txn.rollback().await.unwrap();
    assert!(cache.has("posts").await.unwrap());

    {
        let mut txn = CacheTransaction::begin(&db, cache).await.unwrap();
        txn.invalidate([dep::pk("posts", 2)]);
        rename(&txn, 2, "Dropped").await;
    } // dropped: rolled back
    assert!(cache.has("posts").await.unwrap());
    assert_eq!(list(cache, &db).await[1].title, "Caching");
}

/// Dropping the future of `commit` once it has begun (a timeout, a client that disconnects)
/// still commits and invalidates: no committed write is left with its old data cached.
async fn a_dropped_commit_still_commits_and_invalidates(h: Harness) {
    let (_dir, db) = database().await;
    let cache = &h.cache;
    list(cache, &db).await;

    let mut txn = CacheTransaction::begin(&db, cache).await.unwrap();
    let renamed = rename(&txn, 1, "Committed anyway").await;
    txn.invalidate_model(&renamed);
    // Polled once, then dropped (unless the commit's own task, on another worker thread,
    // already finished by then).
    let _ = tokio::time::timeout(Duration::ZERO, txn.commit()).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = post::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
        if committed.title == "Committed anyway" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The commit's invalidations run right after it; give them a bounded time.
    while cache.has("posts").await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "never invalidated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(list(cache, &db).await[0].title, "Committed anyway");
}

backend_tests!(
    a_dropped_commit_still_commits_and_invalidates,
    invalidation_waits_for_the_commit,
    in_flight_reader_cannot_store_old_data,
    rollback_invalidates_nothing,
);

/// Redis down at commit time: the data is committed and the error hands back what is still
/// to invalidate; retrying once Redis is back finishes the job.
#[tokio::test]
async fn commit_reports_pending_invalidations_when_redis_is_down() {
    let (_dir, db) = database().await;
    let mut server = RedisServer::start();
    let cache = MatroskaCache::new(
        matroska_cache::RedisBackend::builder(&server.url(), "orm")
            .timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap(),
    );
    list(&cache, &db).await;

    let mut txn = CacheTransaction::begin(&db, &cache).await.unwrap();
    let renamed = rename(&txn, 2, "Committed").await;
    txn.invalidate_model(&renamed);
    server.kill();
    let pending = match txn.commit().await {
        Err(CommitError::Invalidation { pending, .. }) => pending,
        other => panic!("expected an invalidation error, got {other:?}"),
    };
    assert_eq!(pending, [dep::pk("posts", 2)]);
    let committed = post::Entity::find_by_id(2).one(&db).await.unwrap().unwrap();
    assert_eq!(committed.title, "Committed");

    server.restart();
    // The restarted server lost its data anyway; the retry must still succeed.
    let mut retried = false;
    for _ in 0..100 {
        if cache.invalidate(pending.clone()).await.is_ok() {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(retried, "the invalidation could not be retried");
    assert_eq!(list(&cache, &db).await[1].title, "Committed");
}

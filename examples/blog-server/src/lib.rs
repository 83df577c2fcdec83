//! A small blog whose pages [`matroska_http::CacheLayer`] caches: each page declares the
//! articles it shows, and editing an article (in a [`CacheTransaction`]) invalidates them once
//! the edit is committed.
//!
//! - `GET /`: the list of articles; depends on each listed article and on the list itself
//!   (`tag:articles`, invalidated when an article is added).
//! - `GET /articles/{id}`: one article and a form to edit it; depends on the article.
//! - `POST /articles/{id}`: saves an edit, then redirects to the article.
//!
//! Pages are sent with `Cache-Control: no-cache`: a browser keeps them but asks again each
//! time with `If-None-Match`, which the layer answers with a 304 while the page is cached.
//!
//! **Not a template for authentication.** Anyone who reaches the server can edit, and the
//! form has no CSRF token: the example listens on 127.0.0.1 only. A real site checks the
//! editor (and a CSRF token) in the `POST` handler or a layer, and gives readers who are
//! logged in either uncached pages (the layer bypasses requests with credentials) or
//! per-user ones (`CacheLayer::per_user`, which must verify the session itself). Behind a
//! reverse proxy, name the forwarded headers the handlers never read in
//! `CacheLayer::ignore_headers`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use matroska_cache::orm::{model_dep, model_deps, CacheTransaction};
use matroska_cache::{dep, depends_on, MatroskaCache};
use matroska_http::CacheLayer;
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr,
    EntityTrait, QueryOrder, Set,
};
use serde::Deserialize;

/// The blog's one table.
pub mod article {
    use sea_orm::entity::prelude::*;

    /// An article.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "articles")]
    pub struct Model {
        /// Its id.
        #[sea_orm(primary_key)]
        pub id: i32,
        /// Its title.
        pub title: String,
        /// Its text.
        pub body: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// How long a page stays cached at most (an edit drops it at once).
pub const PAGE_TTL: Duration = Duration::from_secs(600);

/// Opens the database at `url` (such as `sqlite://blog.db?mode=rwc`), creating the table and
/// three articles if it is new.
pub async fn open_database(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    // Readers need connections of their own while an edit's transaction holds one.
    options.max_connections(4).sqlx_logging(false);
    let db = Database::connect(options).await?;
    db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS articles (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL)",
    )
    .await?;
    if article::Entity::find().one(&db).await?.is_none() {
        for (title, body) in [
            (
                "Hello, cache",
                "This page is cached until this article changes.",
            ),
            (
                "Dependency tracking",
                "Every page says what it was built from.",
            ),
            (
                "Editing",
                "Edit an article below: its pages are dropped when the edit commits.",
            ),
        ] {
            article::ActiveModel {
                title: Set(title.to_owned()),
                body: Set(body.to_owned()),
                ..Default::default()
            }
            .insert(&db)
            .await?;
        }
    }
    Ok(db)
}

#[derive(Clone)]
struct Blog {
    db: DatabaseConnection,
    cache: MatroskaCache,
}

/// The blog's routes, with its pages cached in `cache`.
pub fn router(db: DatabaseConnection, cache: MatroskaCache) -> Router {
    // A name of its own: pages survive deploys, and no other layer on the cache serves them.
    let layer = CacheLayer::new(cache.clone(), PAGE_TTL).key_prefix("blog");
    Router::new()
        .route("/", get(index))
        .route("/articles/{id}", get(show).post(edit))
        .with_state(Blog { db, cache })
        .layer(layer)
}

/// A database error as a 500 page (never cached: the layer stores 200s).
struct Failure(DbErr);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "database error");
        (StatusCode::INTERNAL_SERVER_ERROR, "database error").into_response()
    }
}

impl From<DbErr> for Failure {
    fn from(error: DbErr) -> Self {
        Failure(error)
    }
}

fn page(title: &str, content: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; color: #222; }}
h1 {{ font-size: 1.6rem; }} a {{ color: #0a5; }} textarea, input {{ width: 100%; font: inherit; }}
footer {{ margin-top: 2rem; color: #777; font-size: .85rem; }}
</style></head>
<body><p><a href="/">Matroska blog</a></p>
{content}
<footer>Served through <code>matroska_http::CacheLayer</code>:
<span id="x-cache">x-cache: …</span></footer>
<script>
fetch(location.href, {{ method: "HEAD" }}).then(r =>
  document.getElementById("x-cache").textContent =
    "x-cache: " + r.headers.get("x-cache") + ", ETag " + r.headers.get("etag"));
</script>
</body></html>"#,
        title = escape(title),
    );
    ([(header::CACHE_CONTROL, "no-cache")], Html(html)).into_response()
}

async fn index(State(blog): State<Blog>) -> Result<Response, Failure> {
    let articles = article::Entity::find()
        .order_by_asc(article::Column::Id)
        .all(&blog.db)
        .await?;
    depends_on(model_deps(&articles));
    depends_on([dep::tag("articles")]);
    let items: String = articles
        .iter()
        .map(|a| {
            format!(
                "<li><a href=\"/articles/{}\">{}</a></li>\n",
                a.id,
                escape(&a.title)
            )
        })
        .collect();
    Ok(page(
        "Matroska blog",
        &format!("<h1>Articles</h1>\n<ul>\n{items}</ul>"),
    ))
}

async fn show(State(blog): State<Blog>, Path(id): Path<i32>) -> Result<Response, Failure> {
    let Some(article) = article::Entity::find_by_id(id).one(&blog.db).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such article").into_response());
    };
    depends_on([model_dep(&article)]);
    let content = format!(
        r#"<h1 id="title">{title}</h1>
<p id="body">{body}</p>
<form method="post" action="/articles/{id}">
<p><input name="title" value="{title}"></p>
<p><textarea name="body" rows="4">{body}</textarea></p>
<p><button>Save</button></p>
</form>"#,
        title = escape(&article.title),
        body = escape(&article.body),
        id = article.id,
    );
    Ok(page(&article.title, &content))
}

/// An edit of an article.
#[derive(Deserialize)]
struct Edit {
    title: String,
    body: String,
}

async fn edit(
    State(blog): State<Blog>,
    Path(id): Path<i32>,
    Form(edit): Form<Edit>,
) -> Result<Response, Response> {
    let internal = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "an edit failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "the edit failed").into_response()
    };
    if edit.title.trim().is_empty() {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "a title is required").into_response());
    }
    let mut txn = CacheTransaction::begin(&blog.db, &blog.cache)
        .await
        .map_err(|e| internal(&e))?;
    let saved = article::ActiveModel {
        id: Set(id),
        title: Set(edit.title),
        body: Set(edit.body),
    }
    .update(&*txn)
    .await;
    let saved = match saved {
        Ok(saved) => saved,
        Err(DbErr::RecordNotUpdated) => {
            return Err((StatusCode::NOT_FOUND, "no such article").into_response())
        }
        Err(error) => return Err(internal(&error)),
    };
    txn.invalidate_model(&saved);
    txn.commit().await.map_err(|e| internal(&e))?;
    Ok(Redirect::to(&format!("/articles/{id}")).into_response())
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

//! [SeaORM](https://www.sea-ql.org/SeaORM/) integration (`sea-orm` feature): dependencies
//! of model instances, and invalidations applied only after a transaction commits (the
//! original's `PrimaryKey.from_instance` and `sa_dependencies`, for SeaORM).
//!
//! - [`model_dep`] is `pk:<table>:<primary key>` for one model (composite keys included),
//!   the same text as [`dep::pk`](crate::dep::pk)`(table, key)`, so a writer without the
//!   instance at hand can invalidate it too; [`model_deps`] does many, each once.
//! - [`CacheTransaction`] wraps a database transaction and queues the dependencies of what
//!   it writes; [`commit`](CacheTransaction::commit) invalidates them *after* the commit.
//!
//! Why after: a reader that re-caches while the transaction is open reads the data from
//! before it, and an invalidation sent before the commit would be undone by that reader.
//! After the commit, every reader reads the new data, and a `get_or_compute` that read the
//! old data earlier has its store refused by the invalidation (stale-set fencing). The
//! queued dependencies are also invalidated just before the commit, so that a crash between
//! the commit and the invalidation leaves stale only what was re-cached in that short
//! window, not everything cached before the transaction.
//!
//! See `examples/orm/` (`cargo run --example orm --features sea-orm`) for the whole story
//! against SQLite.

use std::ops::Deref;

use sea_orm::{
    DatabaseTransaction, DbErr, EntityName, EntityTrait, Iterable, ModelTrait, PrimaryKeyToColumn,
    TransactionTrait, Value,
};
use tracing::warn;

use crate::cache::MatroskaCache;
use crate::collect::DepSet;
use crate::dep::{pk_columns, Dep};
use crate::detach;
use crate::error::Error;

/// The dependency on one model instance: `pk:<table>:<key>[:<key>...]`.
///
/// Integer, string, character and boolean key columns render as they do in
/// [`dep::pk`](crate::dep::pk); other column types as SQL literals without their quotes.
pub fn model_dep<M: ModelTrait>(model: &M) -> Dep {
    let table = <M::Entity as Default>::default();
    let columns: Vec<String> = <<M::Entity as EntityTrait>::PrimaryKey as Iterable>::iter()
        .map(|key| render(&model.get(key.into_column())))
        .collect();
    pk_columns(table.table_name(), &columns)
}

/// The dependencies of many model instances, each once, in order.
pub fn model_deps<'a, M: ModelTrait + 'a>(models: impl IntoIterator<Item = &'a M>) -> Vec<Dep> {
    let mut deps = DepSet::default();
    for model in models {
        deps.insert(model_dep(model));
    }
    deps.into_vec()
}

/// One key column as text.
fn render(value: &Value) -> String {
    match value {
        Value::Bool(Some(v)) => v.to_string(),
        Value::TinyInt(Some(v)) => v.to_string(),
        Value::SmallInt(Some(v)) => v.to_string(),
        Value::Int(Some(v)) => v.to_string(),
        Value::BigInt(Some(v)) => v.to_string(),
        Value::TinyUnsigned(Some(v)) => v.to_string(),
        Value::SmallUnsigned(Some(v)) => v.to_string(),
        Value::Unsigned(Some(v)) => v.to_string(),
        Value::BigUnsigned(Some(v)) => v.to_string(),
        Value::String(Some(v)) => v.to_string(),
        Value::Char(Some(v)) => v.to_string(),
        other => {
            // An SQL literal: unquote strings ('it''s' -> it's); NULL stays NULL.
            let literal = other.to_string();
            match literal
                .strip_prefix('\'')
                .and_then(|l| l.strip_suffix('\''))
            {
                Some(inner) => inner.replace("''", "'"),
                None => literal,
            }
        }
    }
}

/// Why [`CacheTransaction::commit`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The database did not confirm the commit. The queued dependencies were invalidated
    /// anyway (the commit may have happened), so the cache is not stale either way.
    #[error("the transaction did not commit: {0}")]
    Database(#[source] DbErr),

    /// The transaction committed, but the cache could not be told: entries built from the
    /// old data may still be served until their TTL ends. Retry
    /// `cache.invalidate(pending)` (for example from a retry queue).
    #[error("the transaction committed, but invalidating {} dependencies failed: {source}", pending.len())]
    Invalidation {
        /// What the cache reported.
        #[source]
        source: Error,
        /// The dependencies still to invalidate.
        pending: Vec<Dep>,
    },
}

/// A database transaction that invalidates the cache entries its writes affect, after it
/// commits.
///
/// It dereferences to the [`DatabaseTransaction`], so queries run on `&*txn`. Dropping it
/// (or [`rollback`](Self::rollback)) rolls back and forgets the queued invalidations: the
/// data did not change.
///
/// ```
/// # mod post {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "posts")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub title: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use matroska_cache::orm::CacheTransaction;
/// use matroska_cache::{dep, MatroskaCache};
/// use sea_orm::{ActiveModelTrait, ConnectionTrait, Database, Set};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Database::connect("sqlite::memory:").await?;
/// # db.execute_unprepared("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)").await?;
/// # db.execute_unprepared("INSERT INTO posts VALUES (1, 'Old')").await?;
/// let cache = MatroskaCache::in_memory();
/// cache.put("post:1", "Old", [dep::pk("posts", 1)], Duration::from_secs(60)).await?;
///
/// let mut txn = CacheTransaction::begin(&db, &cache).await?;
/// let post = post::ActiveModel { id: Set(1), title: Set("New".into()) }.update(&*txn).await?;
/// txn.invalidate_model(&post);
/// txn.commit().await?; // commits, then drops every entry that depends on post 1
/// assert!(!cache.has("post:1").await?);
/// # Ok(()) }
/// ```
pub struct CacheTransaction {
    txn: DatabaseTransaction,
    cache: MatroskaCache,
    queued: DepSet,
}

impl std::fmt::Debug for CacheTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheTransaction")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl CacheTransaction {
    /// Begins a transaction on `db` whose invalidations go to `cache`.
    pub async fn begin<C: TransactionTrait>(db: &C, cache: &MatroskaCache) -> Result<Self, DbErr> {
        Ok(CacheTransaction {
            txn: db.begin().await?,
            cache: cache.clone(),
            queued: DepSet::default(),
        })
    }

    /// Queues dependencies to invalidate once the transaction commits.
    pub fn invalidate(&mut self, deps: impl IntoIterator<Item = Dep>) {
        for dep in deps {
            self.queued.insert(dep);
        }
    }

    /// Queues the dependency of a model this transaction wrote (inserted, updated or
    /// deleted).
    pub fn invalidate_model<M: ModelTrait>(&mut self, model: &M) {
        self.queued.insert(model_dep(model));
    }

    /// The dependencies queued so far.
    pub fn queued(&self) -> Vec<Dep> {
        self.queued.clone().into_vec()
    }

    /// Commits, then invalidates everything queued; returns how many entries were dropped
    /// (by the invalidations just before and just after the commit together).
    ///
    /// Once polled, the commit and its invalidations run to the end in a task of their own:
    /// dropping this future (a timeout, a client that disconnects) cannot leave a committed
    /// write whose invalidation never ran.
    pub async fn commit(self) -> Result<u64, CommitError> {
        let pending = self.queued();
        detach::run_to_completion(self.commit_now())
            .await
            .unwrap_or_else(|source| Err(CommitError::Invalidation { source, pending }))
    }

    async fn commit_now(self) -> Result<u64, CommitError> {
        let CacheTransaction { txn, cache, queued } = self;
        let deps = queued.into_vec();
        if deps.is_empty() {
            return txn
                .commit()
                .await
                .map(|()| 0)
                .map_err(CommitError::Database);
        }
        // Narrows what a crash right after the commit could leave stale; a failure here
        // is not fatal, the invalidation after the commit is the one that counts.
        let before = match cache.invalidate(&deps).await {
            Ok(dropped) => dropped,
            Err(error) => {
                warn!(%error, "invalidation before commit failed; retrying after it");
                0
            }
        };
        if let Err(db_error) = txn.commit().await {
            // The commit may still have happened: invalidate anyway.
            if let Err(error) = cache.invalidate(&deps).await {
                warn!(%error, "invalidation after a failed commit failed too");
            }
            return Err(CommitError::Database(db_error));
        }
        match cache.invalidate(&deps).await {
            Ok(after) => Ok(before + after),
            Err(source) => Err(CommitError::Invalidation {
                source,
                pending: deps,
            }),
        }
    }

    /// Rolls back; nothing is invalidated.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl Deref for CacheTransaction {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

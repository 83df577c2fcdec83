//! Scopes: cached filtered lists stay correct as items enter and leave their filters; the
//! original's development and production modes.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use matroska_cache::changes::changed_fields;
use matroska_cache::scopes::{Condition, Mode, Scopes};
use matroska_cache::{dep, Dep, Error, MatroskaCache};
use serde::{Deserialize, Serialize};
use support::Harness;

const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Book {
    id: u32,
    category: String,
    title: String,
    published: bool,
}

/// Lists of books by category.
#[derive(Serialize)]
struct InCategory {
    category: String,
}
impl Condition for InCategory {
    const PARAMS: &'static [&'static str] = &["category"];
}

/// Lists of published books by category and year-less "shelf" (a computed parameter: it
/// watches `category`, which has another name).
#[derive(Serialize)]
struct OnShelf {
    shelf: String,
}
impl Condition for OnShelf {
    const PARAMS: &'static [&'static str] = &["shelf"];
}

fn book_scopes(mode: Mode) -> Scopes<Book> {
    Scopes::new("book", mode)
        .describes(|b: &Book| {
            Ok(Some(InCategory {
                category: b.category.clone(),
            }))
        })
        // Drafts are on no shelf: None leaves them out.
        .describes_watching(&["category", "published"], |b: &Book| {
            Ok(b.published.then(|| OnShelf {
                shelf: format!("shelf-{}", b.category),
            }))
        })
}

/// The original's books database with a per-category list, its invalidations declared once
/// in a `Scopes` instead of at every write.
struct Library {
    cache: MatroskaCache,
    scopes: Scopes<Book>,
    books: Mutex<BTreeMap<u32, Book>>,
}

impl Library {
    fn new(cache: MatroskaCache) -> Self {
        Library {
            cache,
            scopes: book_scopes(Mode::Development),
            books: Mutex::default(),
        }
    }

    /// (cache hit, ids of the books in `category`)
    async fn list(&self, category: &str) -> (bool, Vec<u32>) {
        let key = format!("books-{category}");
        if let Some(ids) = self.cache.get::<Vec<u32>>(&key).await.unwrap() {
            return (true, ids);
        }
        let books: Vec<Book> = self
            .books
            .lock()
            .unwrap()
            .values()
            .filter(|b| b.category == category)
            .cloned()
            .collect();
        let mut deps: Vec<Dep> = books.iter().map(|b| dep::id("book", b.id)).collect();
        deps.extend(
            self.scopes
                .condition(&InCategory {
                    category: category.into(),
                })
                .unwrap(),
        );
        let ids: Vec<u32> = books.iter().map(|b| b.id).collect();
        self.cache.put(&key, &ids, deps, TTL).await.unwrap();
        (false, ids)
    }

    async fn add(&self, category: &str) -> u32 {
        let book = {
            let mut books = self.books.lock().unwrap();
            let id = books.len() as u32 + 1;
            let book = Book {
                id,
                category: category.into(),
                title: String::new(),
                published: true,
            };
            books.insert(id, book.clone());
            book
        };
        self.scopes
            .invalidate_change(&self.cache, None, Some(&book))
            .await
            .unwrap();
        book.id
    }

    async fn modify(&self, id: u32, change: impl FnOnce(&mut Book)) {
        let (old, new) = {
            let mut books = self.books.lock().unwrap();
            let book = books.get_mut(&id).unwrap();
            let old = book.clone();
            change(book);
            (old, book.clone())
        };
        self.cache.invalidate([dep::id("book", id)]).await.unwrap();
        self.scopes
            .invalidate_change(&self.cache, Some(&old), Some(&new))
            .await
            .unwrap();
    }
}

/// The original's `test_collection_dependencies`, with a move into the filter added.
async fn original_collection_dependencies(h: Harness) {
    let lib = Library::new(h.cache.clone());
    assert_eq!(lib.list("sci-fi").await, (false, vec![]));
    assert_eq!(lib.list("sci-fi").await, (true, vec![]));

    // A fantasy book keeps the cached sci-fi list.
    let fantasy = lib.add("fantasy").await;
    assert_eq!(lib.list("sci-fi").await, (true, vec![]));

    // A sci-fi book invalidates it: it enters the filter.
    let scifi = lib.add("sci-fi").await;
    assert_eq!(lib.list("sci-fi").await, (false, vec![scifi]));
    assert_eq!(lib.list("sci-fi").await, (true, vec![scifi]));

    // Modifying a sci-fi book invalidates it.
    lib.modify(scifi, |b| b.title = "Caching is Easy".into())
        .await;
    assert_eq!(lib.list("sci-fi").await, (false, vec![scifi]));

    // Moving the fantasy book into sci-fi invalidates it (and the fantasy list it left).
    assert_eq!(lib.list("fantasy").await, (false, vec![fantasy]));
    lib.modify(fantasy, |b| b.category = "sci-fi".into()).await;
    assert_eq!(lib.list("sci-fi").await, (false, vec![fantasy, scifi]));
    assert_eq!(lib.list("fantasy").await, (false, vec![]));

    // Adding and modifying other books does not.
    let other = lib.add("tutorials").await;
    lib.modify(other, |b| b.title = "Easy Gardening".into())
        .await;
    lib.modify(other, |b| b.published = false).await;
    assert_eq!(lib.list("sci-fi").await, (true, vec![fantasy, scifi]));
}

/// Only filters watching a changed field run: a title change moves a book out of no list.
async fn only_watching_extractors_run(h: Harness) {
    let scopes = book_scopes(Mode::Development);
    let c = &h.cache;
    let shelf = scopes
        .condition(&OnShelf {
            shelf: "shelf-sf".into(),
        })
        .unwrap();
    let category = scopes
        .condition(&InCategory {
            category: "sf".into(),
        })
        .unwrap();
    let book = Book {
        id: 1,
        category: "sf".into(),
        title: "Dune".into(),
        published: true,
    };
    let put_both = || async {
        c.put("shelf", "[]", shelf.clone(), TTL).await.unwrap();
        c.put("category", "[]", category.clone(), TTL)
            .await
            .unwrap();
    };

    put_both().await;
    assert_eq!(
        scopes
            .invalidate_for_modified(c, &book, &["title"])
            .await
            .unwrap(),
        0
    );
    // `published` is watched by the shelf filter only.
    assert_eq!(
        scopes
            .invalidate_for_modified(c, &book, &["published"])
            .await
            .unwrap(),
        1
    );
    assert!(c.has("category").await.unwrap());
    assert!(!c.has("shelf").await.unwrap());

    // No modified list, or an empty one, runs every filter (as in the original).
    put_both().await;
    assert_eq!(
        scopes
            .invalidate_for_modified(c, &book, &[] as &[&str])
            .await
            .unwrap(),
        2
    );
    put_both().await;
    assert_eq!(scopes.invalidate_for(c, &book).await.unwrap(), 2);

    // A draft is on no shelf: its extractor returns None.
    put_both().await;
    let draft = Book {
        published: false,
        ..book.clone()
    };
    assert_eq!(scopes.invalidate_for(c, &draft).await.unwrap(), 1);
    assert!(c.has("shelf").await.unwrap());

    // Unpublishing moves it off the shelf: the old version is on it.
    assert_eq!(
        scopes
            .invalidate_change(c, Some(&book), Some(&draft))
            .await
            .unwrap(),
        1
    );
    assert!(!c.has("shelf").await.unwrap());
    // Nothing changed: nothing is invalidated.
    assert_eq!(
        scopes
            .invalidate_change(c, Some(&book), Some(&book))
            .await
            .unwrap(),
        0
    );
}

/// A condition nobody declared: production caches the list but drops it on every write of
/// the type (with a warning); development refuses it.
async fn undeclared_condition(h: Harness) {
    #[derive(Serialize)]
    struct ByTitle {
        title: String,
    }
    impl Condition for ByTitle {
        const PARAMS: &'static [&'static str] = &["title"];
    }
    let by_title = ByTitle {
        title: "Dune".into(),
    };
    let err = book_scopes(Mode::Development)
        .condition(&by_title)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Scope { object_type, reason } if object_type == "book" && reason.contains("ByTitle")),
        "{err}"
    );

    let scopes = book_scopes(Mode::Production);
    let deps = scopes.condition(&by_title).unwrap();
    let c = &h.cache;
    c.put("by-title", "[]", deps, TTL).await.unwrap();
    // An unrelated write of any book, even one no filter watches, drops it.
    let book = Book {
        id: 9,
        category: "x".into(),
        title: "y".into(),
        published: false,
    };
    scopes
        .invalidate_for_modified(c, &book, &["title"])
        .await
        .unwrap();
    assert!(!c.has("by-title").await.unwrap());
}

/// An extractor that fails, or returns other parameters than it declared: development
/// reports it; production invalidates every list of the type.
async fn misbehaving_extractors(h: Harness) {
    #[derive(Serialize)]
    struct Partial {
        category: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        year: Option<u16>,
    }
    impl Condition for Partial {
        const PARAMS: &'static [&'static str] = &["category", "year"];
    }
    let failing = |mode| {
        book_scopes(mode).describes(|b: &Book| {
            if b.id == 13 {
                Err("unlucky".into())
            } else {
                Ok(None::<InCategory>)
            }
        })
    };
    let partial = |mode| {
        book_scopes(mode).describes(|b: &Book| {
            Ok(Some(Partial {
                category: b.category.clone(),
                year: None,
            }))
        })
    };
    let book = |id| Book {
        id,
        category: "sf".into(),
        title: String::new(),
        published: true,
    };

    let err = failing(Mode::Development).deps_for(&book(13)).unwrap_err();
    assert!(err.to_string().contains("unlucky"), "{err}");
    assert!(failing(Mode::Development).deps_for(&book(1)).is_ok());
    let err = partial(Mode::Development).deps_for(&book(1)).unwrap_err();
    assert!(err.to_string().contains("declared"), "{err}");
    // A condition that serializes other names than PARAMS is caught the same way.
    let err = partial(Mode::Development)
        .condition(&Partial {
            category: "sf".into(),
            year: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("declared"), "{err}");

    for scopes in [failing(Mode::Production), partial(Mode::Production)] {
        let c = &h.cache;
        let bystander = scopes
            .condition(&InCategory {
                category: "other".into(),
            })
            .unwrap();
        c.put("other-list", "[]", bystander, TTL).await.unwrap();
        let deps = scopes.deps_for(&book(13)).unwrap();
        assert!(deps.contains(&scopes.kill_switch()), "{deps:?}");
        c.invalidate(deps).await.unwrap();
        assert!(!c.has("other-list").await.unwrap(), "the kill switch fired");
    }
}

/// `describes::<OnShelf>` watches `shelf`, which is not a field of `Book`: on an update of
/// `category` it would never run and the shelf list would go stale. Development: an error;
/// production: every list of the type is invalidated.
async fn filters_watching_names_the_item_lacks(h: Harness) {
    let c = &h.cache;
    let bad = |mode| {
        Scopes::<Book>::new("book", mode).describes(|b: &Book| {
            Ok(Some(OnShelf {
                shelf: format!("shelf-{}", b.category),
            }))
        })
    };
    let book = Book {
        id: 1,
        category: "sf".into(),
        title: "Dune".into(),
        published: true,
    };
    let err = bad(Mode::Development)
        .invalidate_for_modified(c, &book, &["category"])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Scope { reason, .. } if reason.contains("\"shelf\"")),
        "{err}"
    );

    let production = bad(Mode::Production);
    let shelf = production
        .condition(&OnShelf {
            shelf: "shelf-sf".into(),
        })
        .unwrap();
    c.put("shelf-sf", "[]", shelf, TTL).await.unwrap();
    production
        .invalidate_for_modified(c, &book, &["category"])
        .await
        .unwrap();
    assert!(
        !c.has("shelf-sf").await.unwrap(),
        "the shelf list went stale"
    );
    // A correct declaration is not refused.
    book_scopes(Mode::Development)
        .deps_for_modified(&book, &["category"])
        .unwrap();
}

backend_tests!(
    filters_watching_names_the_item_lacks,
    original_collection_dependencies,
    only_watching_extractors_run,
    undeclared_condition,
    misbehaving_extractors,
);

/// Condition values compare by value and never collide, whatever they contain.
#[test]
fn condition_texts_are_collision_free() {
    #[derive(Serialize)]
    struct Pair<A, B> {
        a: A,
        b: B,
    }
    impl<A: Serialize + 'static, B: Serialize + 'static> Condition for Pair<A, B> {
        const PARAMS: &'static [&'static str] = &["a", "b"];
    }
    #[derive(Serialize)]
    enum Status {
        Draft,
        Published,
    }
    struct Item;
    let scopes = Scopes::<Item>::new("item", Mode::Development)
        .describes(|_: &Item| Ok(None::<Pair<String, String>>))
        .describes(|_: &Item| Ok(None::<Pair<u32, bool>>))
        .describes(|_: &Item| Ok(None::<Pair<Status, i64>>));
    let text = |deps: Vec<Dep>| deps[0].to_string();
    let strings = |a: &str, b: &str| Pair {
        a: a.to_owned(),
        b: b.to_owned(),
    };
    // The original rendered both as "&a=x&b=y&b=z&".
    let x = text(scopes.condition(&strings("x&b=y", "z")).unwrap());
    let y = text(scopes.condition(&strings("x", "y&b=z")).unwrap());
    assert_ne!(x, y);
    // Same values, same text; numbers and strings differ.
    let n = text(scopes.condition(&Pair { a: 1u32, b: true }).unwrap());
    assert_eq!(
        n,
        text(scopes.condition(&Pair { a: 1u32, b: true }).unwrap())
    );
    assert_ne!(n, text(scopes.condition(&strings("1", "true")).unwrap()));
    assert_eq!(n, r#"cond:item:{"a"\:1,"b"\:true}"#);
    let e = text(
        scopes
            .condition(&Pair {
                a: Status::Published,
                b: -3i64,
            })
            .unwrap(),
    );
    assert_eq!(e, r#"cond:item:{"a"\:"Published","b"\:-3}"#);
    assert_ne!(
        e,
        text(
            scopes
                .condition(&Pair {
                    a: Status::Draft,
                    b: -3i64
                })
                .unwrap()
        )
    );
    // Every text parses back to the same dependency.
    for t in [x, y, n, e] {
        assert_eq!(t.parse::<Dep>().unwrap().to_string(), t);
    }
}

/// The changed-fields helper feeds `modified`.
#[test]
fn changed_fields_feed_modified() {
    let old = Book {
        id: 1,
        category: "sf".into(),
        title: "Dune".into(),
        published: true,
    };
    let new = Book {
        title: "Dune Messiah".into(),
        published: false,
        ..old.clone()
    };
    assert_eq!(changed_fields(&old, &new).unwrap(), ["published", "title"]);
}

/// Condition texts do not depend on field order, even with serde_json's `preserve_order`
/// (turned on for this crate's tests by its dev-dependencies, as another crate of an
/// application could).
#[test]
fn condition_texts_ignore_field_order_and_preserve_order() {
    #[derive(Serialize)]
    struct Ab {
        a: u32,
        b: BTreeMap<String, u32>,
    }
    impl Condition for Ab {
        const PARAMS: &'static [&'static str] = &["a", "b"];
    }
    #[derive(Serialize)]
    struct Ba {
        b: BTreeMap<String, u32>,
        a: u32,
    }
    impl Condition for Ba {
        const PARAMS: &'static [&'static str] = &["a", "b"];
    }
    let scopes = Scopes::<u32>::new("n", Mode::Development)
        .describes(|_: &u32| Ok(None::<Ab>))
        .describes(|_: &u32| Ok(None::<Ba>));
    let b: BTreeMap<String, u32> = [("y".to_owned(), 2), ("x".to_owned(), 1)].into();
    let ab = scopes.condition(&Ab { a: 1, b: b.clone() }).unwrap();
    let ba = scopes.condition(&Ba { b, a: 1 }).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab[0].as_str(), r#"cond:n:{"a"\:1,"b"\:{"x"\:1,"y"\:2}}"#);
}

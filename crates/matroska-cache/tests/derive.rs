//! `#[derive(Dependencies)]`: nested dependency collection, and misuse as compile errors.
#![cfg(feature = "derive")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use matroska_cache::{dep, Dep, Dependencies};
use serde::{Deserialize, Serialize};
use support::Harness;

const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Dependencies)]
#[deps(id = "author")]
struct Author {
    #[deps(key)]
    id: u32,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Dependencies)]
#[deps(id = "article")]
struct Article {
    #[deps(key)]
    id: u32,
    title: String,
    author: Author,
    coauthors: Vec<Author>,
    editor: Option<Box<Author>>,
    comments: BTreeMap<u32, Comment>,
    #[deps(skip)]
    #[serde(skip)]
    views: Counter,
}

/// A composite key: `pk:comment:<article>:<n>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Dependencies)]
#[deps(pk = "comment")]
struct Comment {
    #[deps(key)]
    article: u32,
    #[deps(key)]
    n: u32,
    by: Author,
}

/// No `Dependencies` implementation: only usable in a skipped field.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counter(u64);

/// A page: no dependency of its own, only what it contains; tuple and generic fields.
#[derive(Dependencies)]
struct Page<T> {
    blocks: Vec<Block<T>>,
    extra: Dep,
}

#[derive(Dependencies)]
enum Block<T> {
    Text(String),
    Item(Arc<T>),
    Pair { left: T, right: T },
    Rule,
}

/// A tuple struct with its key by position.
#[derive(Dependencies)]
#[deps(pk = "tag")]
struct TagRef(#[deps(key)] String, HashMap<String, Author>);

fn author(id: u32) -> Author {
    Author {
        id,
        name: format!("author {id}"),
    }
}

fn article(id: u32, by: u32) -> Article {
    Article {
        id,
        title: format!("article {id}"),
        author: author(by),
        coauthors: vec![author(by), author(by + 1)],
        editor: Some(Box::new(author(9))),
        comments: BTreeMap::from([(
            1,
            Comment {
                article: id,
                n: 1,
                by: author(by + 1),
            },
        )]),
        views: Counter(0),
    }
}

#[test]
fn one_value_and_a_list_alike() {
    let one = article(1, 7);
    let expected_one = [
        dep::id("article", 1),
        dep::id("author", 7),
        dep::id("author", 8),
        dep::id("author", 9),
        dep::pk("comment", (1, 1)),
    ];
    assert_eq!(one.dependencies(), expected_one);
    // A list reports each dependency once, in the order first found.
    let list = vec![article(1, 7), article(2, 8)];
    let mut expected_list = expected_one.to_vec();
    expected_list.extend([dep::id("article", 2), dep::pk("comment", (2, 1))]);
    assert_eq!(list.dependencies(), expected_list);
    assert_eq!(list.as_slice().dependencies(), expected_list);
    let by_ref: &Vec<Article> = &list;
    assert_eq!(Dependencies::dependencies(&by_ref), expected_list);
}

#[test]
fn enums_generics_tuple_structs() {
    let page = Page {
        blocks: vec![
            Block::Text("hello".into()),
            Block::Item(Arc::new(author(1))),
            Block::Pair {
                left: author(2),
                right: author(1),
            },
            Block::Rule,
        ],
        extra: dep::tag("homepage"),
    };
    assert_eq!(
        page.dependencies(),
        [
            dep::id("author", 1),
            dep::id("author", 2),
            dep::tag("homepage")
        ]
    );
    let tag = TagRef("rust".into(), HashMap::from([("a".into(), author(3))]));
    assert_eq!(
        tag.dependencies(),
        [dep::pk("tag", "rust"), dep::id("author", 3)]
    );
}

/// The cached list drops when anything nested in it changes, on both backends.
async fn nested_dependencies_invalidate_the_list(h: Harness) {
    let c = &h.cache;
    let list = vec![article(1, 7), article(2, 8)];
    c.put("articles", &list, list.dependencies(), TTL)
        .await
        .unwrap();
    c.put("article:2", &list[1], list[1].dependencies(), TTL)
        .await
        .unwrap();
    let back: Vec<Article> = c.get("articles").await.unwrap().unwrap();
    assert_eq!(back[0].title, "article 1");

    // Author 7 appears only inside article 1 (as author and coauthor).
    assert_eq!(c.invalidate([dep::id("author", 7)]).await.unwrap(), 1);
    assert!(!c.has("articles").await.unwrap());
    assert!(c.has("article:2").await.unwrap());
    // A comment's composite key reaches article 2.
    assert_eq!(c.invalidate([dep::pk("comment", (2, 1))]).await.unwrap(), 1);
    assert!(!c.has("article:2").await.unwrap());
}

/// Through `get_or_compute`, the computation returns the value's own dependencies.
async fn read_through_with_derived_deps(h: Harness) {
    let c = &h.cache;
    let compute = || async {
        let list = vec![article(1, 7)];
        let deps = list.dependencies();
        Ok::<_, std::io::Error>((list, deps))
    };
    let first: Vec<Article> = c.get_or_compute("list", TTL, compute).await.unwrap();
    assert!(c.has("list").await.unwrap());
    c.invalidate([dep::id("author", 9)]).await.unwrap(); // the editor
    assert!(!c.has("list").await.unwrap());
    let again: Vec<Article> = c.get_or_compute("list", TTL, compute).await.unwrap();
    assert_eq!(first, again);
}

backend_tests!(
    nested_dependencies_invalidate_the_list,
    read_through_with_derived_deps,
);

/// Misuse is a compile error that points at the field (see `tests/ui/*.stderr`).
#[test]
fn misuse_is_a_compile_error() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}

mod conditions {
    use matroska_cache::scopes::{Condition, Mode, Scopes};
    use serde::Serialize;

    #[derive(Serialize, Condition)]
    struct Listing {
        category: String,
        #[serde(rename = "pub")]
        published: bool,
        r#type: u8,
    }

    #[derive(Serialize, Condition)]
    struct Generic<T> {
        #[serde(rename = "category")]
        cat: T,
    }

    /// PARAMS are the serialized names, so conditions and extractors agree by construction.
    #[test]
    fn params_follow_the_struct() {
        assert_eq!(Listing::PARAMS, ["category", "pub", "type"]);
        assert_eq!(Generic::<u32>::PARAMS, ["category"]);
        struct Item;
        let scopes = Scopes::<Item>::new("item", Mode::Development).describes(|_: &Item| {
            Ok(Some(Listing {
                category: "a".into(),
                published: true,
                r#type: 1,
            }))
        });
        let deps = scopes
            .condition(&Listing {
                category: "a".into(),
                published: true,
                r#type: 1,
            })
            .unwrap();
        assert_eq!(scopes.deps_for(&Item).unwrap()[1], deps[0]);
    }
}

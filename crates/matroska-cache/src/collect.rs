//! Collecting the dependencies of nested values (the Matroska idea, and the original's
//! `sa_dependencies`): a cached list of articles depends on every article in it and on every
//! author inside those.
//!
//! A type says what it depends on by implementing [`Dependencies`], usually with
//! `#[derive(Dependencies)]` (the `derive` feature). Containers pass through to their
//! elements, plain data (numbers, strings, ...) has no dependencies, and every dependency is
//! reported once, however often it occurs.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::dep::Dep;

/// The dependencies found so far, each once, in the order first found.
#[derive(Clone, Debug, Default)]
pub struct DepSet {
    seen: HashSet<Dep>,
    order: Vec<Dep>,
}

impl DepSet {
    /// Adds `dep` unless it is already there; returns whether it was new.
    pub fn insert(&mut self, dep: Dep) -> bool {
        if self.seen.contains(&dep) {
            return false;
        }
        self.seen.insert(dep.clone());
        self.order.push(dep);
        true
    }

    /// How many dependencies were found.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none were found.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The dependencies, in the order first found.
    pub fn into_vec(self) -> Vec<Dep> {
        self.order
    }
}

impl IntoIterator for DepSet {
    type Item = Dep;
    type IntoIter = std::vec::IntoIter<Dep>;

    fn into_iter(self) -> Self::IntoIter {
        self.order.into_iter()
    }
}

/// A value that knows what it was built from.
///
/// Derive it (with the `derive` feature) on the application's types; pass
/// [`dependencies`](Dependencies::dependencies) to `put`, or return it from a
/// `get_or_compute` computation:
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use matroska_cache::{dep, Dependencies};
/// use std::collections::BTreeMap;
///
/// #[derive(Dependencies)]
/// #[deps(id = "author")]
/// struct Author {
///     #[deps(key)]
///     id: u32,
///     name: String,
/// }
///
/// #[derive(Dependencies)]
/// #[deps(id = "article")]
/// struct Article {
///     #[deps(key)]
///     id: u32,
///     title: String,
///     author: Author,                // nested: its dependencies count too
///     coauthors: Vec<Author>,        // so do those of every element
///     editor: Option<Box<Author>>,
///     reviews: BTreeMap<String, Review>, // map values are walked
///     #[deps(skip)]
///     rendered: Html,                // not walked (and needs no implementation)
/// }
///
/// /// A composite key: `pk:review:<article>:<reviewer>`.
/// #[derive(Dependencies)]
/// #[deps(pk = "review")]
/// struct Review {
///     #[deps(key)]
///     article_id: u32,
///     #[deps(key)]
///     reviewer: String,
///     score: u8,
/// }
///
/// struct Html(String);
///
/// let kolypto = Author { id: 1, name: "kolypto".into() };
/// let articles = vec![
///     Article {
///         id: 1,
///         title: "Python".into(),
///         author: Author { id: 1, name: "kolypto".into() },
///         coauthors: vec![],
///         editor: Some(Box::new(Author { id: 2, name: "ed".into() })),
///         reviews: BTreeMap::from([(
///             "ann".into(),
///             Review { article_id: 1, reviewer: "ann".into(), score: 5 },
///         )]),
///         rendered: Html(String::new()),
///     },
///     Article {
///         id: 2,
///         title: "Cache".into(),
///         author: kolypto,
///         coauthors: vec![Author { id: 2, name: "ed".into() }],
///         editor: None,
///         reviews: BTreeMap::new(),
///         rendered: Html(String::new()),
///     },
/// ];
/// // Each dependency once, in the order found, for one article or a whole list.
/// assert_eq!(
///     articles.dependencies(),
///     [
///         dep::id("article", 1),
///         dep::id("author", 1),
///         dep::id("author", 2),
///         dep::pk("review", (1, "ann")),
///         dep::id("article", 2),
///     ]
/// );
/// ```
///
/// Implement it by hand for types the derive cannot see into: add the value's own
/// dependency, then walk what it contains.
pub trait Dependencies {
    /// Adds this value's dependencies to `deps`.
    fn collect_deps(&self, deps: &mut DepSet);

    /// This value's dependencies, each once, in the order first found.
    fn dependencies(&self) -> Vec<Dep> {
        let mut deps = DepSet::default();
        self.collect_deps(&mut deps);
        deps.into_vec()
    }
}

/// A dependency depends on itself: a field of type `Dep` (or `Vec<Dep>`) contributes it.
impl Dependencies for Dep {
    fn collect_deps(&self, deps: &mut DepSet) {
        deps.insert(self.clone());
    }
}

/// Plain data: no dependencies.
macro_rules! leaf {
    ($($t:ty),* $(,)?) => {$(
        impl Dependencies for $t {
            fn collect_deps(&self, _: &mut DepSet) {}
        }
    )*};
}
leaf!(
    (),
    bool,
    char,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    str,
    String,
    std::time::Duration,
    std::time::SystemTime,
    std::path::PathBuf,
    std::net::IpAddr,
);

/// Containers: the dependencies of what they hold.
macro_rules! through {
    ($($t:ident),* $(,)?) => {$(
        impl<T: Dependencies + ?Sized> Dependencies for $t<T> {
            fn collect_deps(&self, deps: &mut DepSet) {
                (**self).collect_deps(deps);
            }
        }
    )*};
}
through!(Box, Rc, Arc);

impl<T: Dependencies + ?Sized> Dependencies for &T {
    fn collect_deps(&self, deps: &mut DepSet) {
        (**self).collect_deps(deps);
    }
}

impl<T: Dependencies + ToOwned + ?Sized> Dependencies for Cow<'_, T> {
    fn collect_deps(&self, deps: &mut DepSet) {
        (**self).collect_deps(deps);
    }
}

impl<T: Dependencies> Dependencies for Option<T> {
    fn collect_deps(&self, deps: &mut DepSet) {
        if let Some(value) = self {
            value.collect_deps(deps);
        }
    }
}

impl<T: Dependencies> Dependencies for [T] {
    fn collect_deps(&self, deps: &mut DepSet) {
        for item in self {
            item.collect_deps(deps);
        }
    }
}

impl<T: Dependencies, const N: usize> Dependencies for [T; N] {
    fn collect_deps(&self, deps: &mut DepSet) {
        self.as_slice().collect_deps(deps);
    }
}

impl<T: Dependencies, S> Dependencies for HashSet<T, S> {
    fn collect_deps(&self, deps: &mut DepSet) {
        for item in self {
            item.collect_deps(deps);
        }
    }
}

impl<T: Dependencies> Dependencies for Vec<T> {
    fn collect_deps(&self, deps: &mut DepSet) {
        self.as_slice().collect_deps(deps);
    }
}

impl<T: Dependencies> Dependencies for VecDeque<T> {
    fn collect_deps(&self, deps: &mut DepSet) {
        for item in self {
            item.collect_deps(deps);
        }
    }
}

impl<T: Dependencies> Dependencies for BTreeSet<T> {
    fn collect_deps(&self, deps: &mut DepSet) {
        for item in self {
            item.collect_deps(deps);
        }
    }
}

/// Maps: the values (keys are how the value is found, not what it is built from).
impl<K, V: Dependencies, S> Dependencies for HashMap<K, V, S> {
    fn collect_deps(&self, deps: &mut DepSet) {
        for value in self.values() {
            value.collect_deps(deps);
        }
    }
}

impl<K, V: Dependencies> Dependencies for BTreeMap<K, V> {
    fn collect_deps(&self, deps: &mut DepSet) {
        for value in self.values() {
            value.collect_deps(deps);
        }
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: Dependencies),+> Dependencies for ($($name,)+) {
            #[allow(non_snake_case)]
            fn collect_deps(&self, deps: &mut DepSet) {
                let ($($name,)+) = self;
                $($name.collect_deps(deps);)+
            }
        }
    };
}
tuple!(A);
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dep;

    /// A hand-written implementation, as for a type the derive cannot see into.
    struct Article {
        id: u32,
        authors: Vec<Author>,
    }
    struct Author(u32);

    impl Dependencies for Author {
        fn collect_deps(&self, deps: &mut DepSet) {
            deps.insert(dep::id("author", self.0));
        }
    }
    impl Dependencies for Article {
        fn collect_deps(&self, deps: &mut DepSet) {
            deps.insert(dep::id("article", self.id));
            self.authors.collect_deps(deps);
        }
    }

    #[test]
    fn each_dependency_once_in_order() {
        let list = vec![
            Article {
                id: 1,
                authors: vec![Author(7), Author(8)],
            },
            Article {
                id: 2,
                authors: vec![Author(8), Author(7)],
            },
        ];
        assert_eq!(
            list.dependencies(),
            [
                dep::id("article", 1),
                dep::id("author", 7),
                dep::id("author", 8),
                dep::id("article", 2),
            ]
        );
        // One article alone, through references, boxes and options.
        let one = Some(Box::new(&list[1]));
        assert_eq!(
            one.dependencies(),
            [
                dep::id("article", 2),
                dep::id("author", 8),
                dep::id("author", 7)
            ]
        );
    }

    #[test]
    fn containers_and_plain_data() {
        let map = HashMap::from([("k", (dep::tag("a"), 3u8, vec![dep::tag("b")]))]);
        assert_eq!(map.dependencies(), [dep::tag("a"), dep::tag("b")]);
        assert!("text".dependencies().is_empty());
        assert!([1u64, 2].dependencies().is_empty());
        let mut set = DepSet::default();
        assert!(set.insert(dep::tag("x")));
        assert!(!set.insert(dep::tag("x")));
        assert_eq!(set.len(), 1);
    }
}

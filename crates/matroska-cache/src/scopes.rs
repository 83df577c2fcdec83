//! Scopes: dependencies for cached *filtered lists* (the original's `Scopes`).
//!
//! A list cached by id dependencies goes stale when a new item *enters* its filter: no id it
//! depends on changed. A [`Scopes`] declares, once per item type, which filters lists are
//! cached by, and how to read an item's filter parameters (its *extractors*). Then:
//!
//! - a cached list depends on [`Scopes::condition`] of its filter;
//! - every write of an item calls [`Scopes::invalidate_for`] (or
//!   [`invalidate_change`](Scopes::invalidate_change) with the old and new versions), which
//!   runs the extractors and invalidates every list the item falls into.
//!
//! Nobody has to remember which lists a write affects: declaring the filter is enough, and a
//! list cached by a filter nobody declared is caught (an error in development, caching disabled
//! for that list in production).
//!
//! ```
//! use matroska_cache::scopes::{Condition, Mode, Scopes};
//! use matroska_cache::{dep, MatroskaCache};
//! use serde::Serialize;
//! use std::time::Duration;
//!
//! #[derive(Serialize)]
//! struct Book { id: u32, category: String }
//!
//! /// Lists of books filtered by category.
//! #[derive(Serialize)]
//! struct InCategory { category: String }
//! impl Condition for InCategory {
//!     const PARAMS: &'static [&'static str] = &["category"];
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), matroska_cache::Error> {
//! let books = Scopes::<Book>::new("book", Mode::Development)
//!     .describes(|book: &Book| Ok(Some(InCategory { category: book.category.clone() })));
//! let cache = MatroskaCache::in_memory();
//! let ttl = Duration::from_secs(60);
//!
//! // The cached list depends on its filter (and on each book in it, as usual).
//! let deps = books.condition(&InCategory { category: "sci-fi".into() })?;
//! cache.put("books:sci-fi", &Vec::<u32>::new(), deps, ttl).await?;
//!
//! // A fantasy book leaves the sci-fi list alone; a sci-fi book drops it.
//! let fantasy = Book { id: 1, category: "fantasy".into() };
//! books.invalidate_for(&cache, &fantasy).await?;
//! assert!(cache.has("books:sci-fi").await?);
//! let dune = Book { id: 2, category: "sci-fi".into() };
//! books.invalidate_for(&cache, &dune).await?;
//! assert!(!cache.has("books:sci-fi").await?);
//! # Ok(()) }
//! ```
//!
//! **Dependency texts.** A condition is `cond:<type>:<parameters as canonical JSON>`, with
//! the parameters sorted by name: values of any serde type compare by value, and no value can
//! collide with another parameter list (the original's `category=a&b=c` could). Every list of
//! a type also depends on the type's kill switch `cond:<type>`; lists whose condition was not
//! declared (production mode) depend on `cond:<type>:*`, which every write of the type
//! invalidates.

use std::any::{type_name, TypeId};
use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use tracing::warn;

use crate::cache::MatroskaCache;
use crate::codec::canonical_json;
use crate::dep::{Dep, DepKind};
use crate::error::{Error, Result};

/// What a misconfigured scope does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Fail loudly: a condition nobody declared, or an extractor that fails or returns
    /// other parameters than it declared, is an [`Error::Scope`].
    Development,
    /// Stay correct and keep serving: such a list is dropped by every write of its item type
    /// (caching is, in effect, disabled for it), a failing extractor invalidates every list of
    /// the type, and each case logs a `tracing` warning.
    Production,
}

/// The parameters of one filter, as a struct: its fields are the parameter names.
///
/// Derive it (`derive` feature) to have `PARAMS` written from the fields, or write it by
/// hand. `PARAMS` lists them as the struct serializes them (after any `#[serde(rename)]`); a struct
/// that serializes other names (say, a field skipped with `skip_serializing_if`) is caught at
/// run time like the original's extractor that "returned other fields than it declared".
/// Values may be of any type that serializes (strings, integers, booleans, enums, ...).
pub trait Condition: Serialize + 'static {
    /// The parameter names.
    const PARAMS: &'static [&'static str];
}

/// Derives [`Condition`] (`derive` feature): `PARAMS` from the field names, as serde
/// serializes them, so they cannot drift from the struct.
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use matroska_cache::scopes::Condition;
/// use serde::Serialize;
///
/// #[derive(Serialize, Condition)]
/// struct Listing {
///     category: String,
///     #[serde(rename = "pub")]
///     published: bool,
/// }
/// assert_eq!(Listing::PARAMS, ["category", "pub"]);
/// ```
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use matroska_cache_derive::Condition;

/// What an extractor may fail with.
pub type ExtractError = Box<dyn std::error::Error + Send + Sync>;

type ExtractFn<T> =
    dyn Fn(&T) -> std::result::Result<Option<serde_json::Value>, ExtractError> + Send + Sync;

/// One declared filter: its condition type, the fields it watches, and how to read an item's
/// parameters.
struct Extractor<T> {
    condition: TypeId,
    condition_name: &'static str,
    params: &'static [&'static str],
    watches: BTreeSet<String>,
    extract: Box<ExtractFn<T>>,
}

/// The declared filters of one item type `T`; see the [module docs](self).
///
/// Build it once (at start-up) and share it; it is `Send + Sync`.
pub struct Scopes<T> {
    object_type: String,
    mode: Mode,
    extractors: Vec<Extractor<T>>,
}

impl<T> fmt::Debug for Scopes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conditions: Vec<_> = self.extractors.iter().map(|e| e.condition_name).collect();
        f.debug_struct("Scopes")
            .field("object_type", &self.object_type)
            .field("mode", &self.mode)
            .field("conditions", &conditions)
            .finish()
    }
}

impl<T> Scopes<T> {
    /// No filters yet, for items called `object_type` (unique per item type: `"book"`).
    pub fn new(object_type: &str, mode: Mode) -> Self {
        Scopes {
            object_type: object_type.to_owned(),
            mode,
            extractors: Vec::new(),
        }
    }

    /// Declares the filter `C`, with the function that reads an item's parameters (`None`
    /// to leave the item out of every list of this filter). It runs on writes that change any
    /// of `C::PARAMS` (see [`describes_watching`](Self::describes_watching)).
    pub fn describes<C: Condition>(
        self,
        extract: impl Fn(&T) -> std::result::Result<Option<C>, ExtractError> + Send + Sync + 'static,
    ) -> Self {
        self.describes_watching(C::PARAMS, extract)
    }

    /// Like [`describes`](Self::describes), but runs when any of `fields` (the item's field
    /// names) changed: for parameters computed from fields of other names.
    pub fn describes_watching<C: Condition>(
        mut self,
        fields: &[&str],
        extract: impl Fn(&T) -> std::result::Result<Option<C>, ExtractError> + Send + Sync + 'static,
    ) -> Self {
        self.extractors.push(Extractor {
            condition: TypeId::of::<C>(),
            condition_name: type_name::<C>(),
            params: C::PARAMS,
            watches: fields.iter().map(|f| (*f).to_owned()).collect(),
            extract: Box::new(move |item| match extract(item)? {
                Some(params) => Ok(Some(serde_json::to_value(&params)?)),
                None => Ok(None),
            }),
        });
        self
    }

    /// The item type's kill switch: every list of this type depends on it, and invalidating
    /// it drops them all.
    pub fn kill_switch(&self) -> Dep {
        Dep::from_parts(DepKind::Cond, [self.object_type.as_str()])
    }

    /// What lists with an undeclared condition depend on in production; every write of the
    /// type invalidates it.
    fn any_write(&self) -> Dep {
        Dep::from_parts(DepKind::Cond, [self.object_type.as_str(), "*"])
    }

    /// The dependencies of a list filtered by `params`: the condition and the kill switch.
    ///
    /// If no filter of type `C` was declared, or `C` serializes other names than
    /// `C::PARAMS`: an [`Error::Scope`] in development; in production, dependencies that
    /// every write of the type invalidates (with a warning).
    pub fn condition<C: Condition>(&self, params: &C) -> Result<Vec<Dep>> {
        let declared = self
            .extractors
            .iter()
            .any(|e| e.condition == TypeId::of::<C>());
        let checked = if declared {
            serde_json::to_value(params)
                .map_err(|e| e.to_string())
                .and_then(|value| self.condition_dep(C::PARAMS, &value))
        } else {
            Err(format!(
                "no extractor describes condition {} (declare it with describes())",
                type_name::<C>()
            ))
        };
        match checked {
            Ok(dep) => Ok(vec![dep, self.kill_switch()]),
            Err(reason) => self.misconfigured(
                reason,
                "scope misconfigured: this list is dropped by every write of its type",
            ),
        }
    }

    /// The dependencies to invalidate when `item` is created, deleted or changed in any way:
    /// the condition of every filter it falls into (the original's `object_invalidates`).
    pub fn deps_for(&self, item: &T) -> Result<Vec<Dep>> {
        self.collect(item, None)
    }

    /// Invalidates every list `item` falls into; returns how many entries were dropped.
    ///
    /// Call it after every write of an item, with the item as written (and, for an update
    /// that can move it out of a list, with the old version too: see
    /// [`invalidate_change`](Self::invalidate_change)).
    pub async fn invalidate_for(&self, cache: &MatroskaCache, item: &T) -> Result<u64> {
        cache.invalidate(self.deps_for(item)?).await
    }

    fn collect(&self, item: &T, modified: Option<&BTreeSet<&str>>) -> Result<Vec<Dep>> {
        let mut deps = vec![self.any_write()];
        for extractor in &self.extractors {
            if let Some(modified) = modified {
                if !extractor
                    .watches
                    .iter()
                    .any(|w| modified.contains(w.as_str()))
                {
                    continue;
                }
            }
            let outcome = (extractor.extract)(item)
                .map_err(|e| format!("extractor for {} failed: {e}", extractor.condition_name))
                .and_then(|params| match params {
                    Some(value) => self.condition_dep(extractor.params, &value).map(Some),
                    None => Ok(None),
                });
            match outcome {
                Ok(Some(dep)) => deps.push(dep),
                Ok(None) => {}
                Err(reason) => {
                    return self.misconfigured(
                        reason,
                        "scope extractor failed: invalidating every list of this type",
                    )
                }
            }
        }
        Ok(deps)
    }

    /// `cond:<type>:<canonical JSON>` for serialized parameters, if they have exactly the
    /// declared names.
    fn condition_dep(
        &self,
        declared: &[&str],
        value: &serde_json::Value,
    ) -> std::result::Result<Dep, String> {
        let serde_json::Value::Object(map) = value else {
            return Err(format!(
                "parameters must serialize as a struct or map, not {value}"
            ));
        };
        let declared_names: BTreeSet<&str> = declared.iter().copied().collect();
        let names: BTreeSet<&str> = map.keys().map(String::as_str).collect();
        if names != declared_names {
            return Err(format!(
                "parameters {names:?} are not the declared {declared_names:?}"
            ));
        }
        // Keys sorted at every level, so equal parameters give equal texts whatever the
        // field order, even when some crate turns on serde_json's `preserve_order`.
        let text = serde_json::to_string(&canonical_json(value)).map_err(|e| e.to_string())?;
        Ok(Dep::from_parts(
            DepKind::Cond,
            [self.object_type.as_str(), text.as_str()],
        ))
    }

    /// A misconfiguration: an error in development; in production a warning, and the
    /// dependencies that cover every list of the type (the kill switch, and what every write
    /// invalidates), both for a list being cached and for a write being invalidated.
    fn misconfigured(&self, reason: String, warning: &str) -> Result<Vec<Dep>> {
        match self.mode {
            Mode::Development => Err(Error::Scope {
                object_type: self.object_type.clone(),
                reason,
            }),
            Mode::Production => {
                warn!(object_type = %self.object_type, %reason, "{warning}");
                Ok(vec![self.kill_switch(), self.any_write()])
            }
        }
    }
}

impl<T: Serialize> Scopes<T> {
    /// Like [`deps_for`](Self::deps_for), for a change of the named fields only: filters
    /// watching none of them are skipped. An empty list counts as "unknown" and runs every
    /// filter, as in the original.
    ///
    /// A filter watching a name that is not one of the item's fields (as serialized) would
    /// never run on such an update: an [`Error::Scope`] in development; in production a
    /// warning, and every list of the type is invalidated. Declare such filters with
    /// [`describes_watching`](Self::describes_watching) and the item's field names.
    pub fn deps_for_modified<S: AsRef<str>>(&self, item: &T, modified: &[S]) -> Result<Vec<Dep>> {
        let modified: BTreeSet<&str> = modified.iter().map(AsRef::as_ref).collect();
        if modified.is_empty() {
            return self.collect(item, None);
        }
        let fields = crate::changes::field_names(item)?;
        for extractor in &self.extractors {
            if let Some(unknown) = extractor.watches.iter().find(|w| !fields.contains(*w)) {
                return self.misconfigured(
                    format!(
                        "the filter {} watches {unknown:?}, which is not a field of the item \
                         ({fields:?}), so it would never run on updates; declare it with \
                         describes_watching() and the item's field names",
                        extractor.condition_name
                    ),
                    "scope misconfigured: invalidating every list of this type",
                );
            }
        }
        self.collect(item, Some(&modified))
    }

    /// [`invalidate_for`](Self::invalidate_for) for a change of the named fields only.
    pub async fn invalidate_for_modified<S: AsRef<str>>(
        &self,
        cache: &MatroskaCache,
        item: &T,
        modified: &[S],
    ) -> Result<u64> {
        cache
            .invalidate(self.deps_for_modified(item, modified)?)
            .await
    }

    /// Invalidates the lists an item leaves and the ones it enters: runs the filters
    /// watching a changed field on the old version and on the new one. `None` for the old
    /// version of a created item, or the new version of a deleted one.
    ///
    /// ```
    /// # use matroska_cache::scopes::{Condition, Mode, Scopes};
    /// # use matroska_cache::MatroskaCache;
    /// # use serde::Serialize;
    /// # use std::time::Duration;
    /// #[derive(Clone, Serialize)]
    /// struct Book { id: u32, category: String, title: String }
    /// #[derive(Serialize)]
    /// struct InCategory { category: String }
    /// impl Condition for InCategory {
    ///     const PARAMS: &'static [&'static str] = &["category"];
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), matroska_cache::Error> {
    /// let books = Scopes::<Book>::new("book", Mode::Development)
    ///     .describes(|b: &Book| Ok(Some(InCategory { category: b.category.clone() })));
    /// let cache = MatroskaCache::in_memory();
    /// let ttl = Duration::from_secs(60);
    /// for category in ["fantasy", "sci-fi"] {
    ///     let deps = books.condition(&InCategory { category: category.into() })?;
    ///     cache.put(&format!("books:{category}"), "[]", deps, ttl).await?;
    /// }
    ///
    /// let old = Book { id: 1, category: "fantasy".into(), title: "Dune".into() };
    /// let new = Book { category: "sci-fi".into(), ..old.clone() };
    /// assert_eq!(books.invalidate_change(&cache, Some(&old), Some(&new)).await?, 2);
    ///
    /// // A title change moves the book nowhere: no list is dropped.
    /// # for category in ["fantasy", "sci-fi"] {
    /// #     let deps = books.condition(&InCategory { category: category.into() })?;
    /// #     cache.put(&format!("books:{category}"), "[]", deps, ttl).await?;
    /// # }
    /// let renamed = Book { title: "Dune Messiah".into(), ..new.clone() };
    /// assert_eq!(books.invalidate_change(&cache, Some(&new), Some(&renamed)).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_change(
        &self,
        cache: &MatroskaCache,
        old: Option<&T>,
        new: Option<&T>,
    ) -> Result<u64> {
        let deps = self.change_deps(old, new)?;
        cache.invalidate(deps).await
    }

    /// The dependencies [`invalidate_change`](Self::invalidate_change) invalidates.
    pub fn change_deps(&self, old: Option<&T>, new: Option<&T>) -> Result<Vec<Dep>> {
        let modified = match (old, new) {
            (Some(old), Some(new)) => {
                let changed = crate::changes::changed_fields(old, new)?;
                if changed.is_empty() {
                    return Ok(Vec::new()); // nothing changed, nothing moves
                }
                Some(changed)
            }
            _ => None,
        };
        let mut deps = Vec::new();
        for item in [old, new].into_iter().flatten() {
            deps.extend(match &modified {
                Some(changed) => self.deps_for_modified(item, changed)?,
                None => self.deps_for(item)?,
            });
        }
        Ok(deps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Params {
        name: String,
        n: i64,
        flag: Option<bool>,
    }
    impl Condition for Params {
        const PARAMS: &'static [&'static str] = &["name", "n", "flag"];
    }

    fn scopes() -> Scopes<()> {
        Scopes::new("thing", Mode::Development).describes(|_: &()| Ok(None::<Params>))
    }

    fn dep_of(p: &Params) -> Dep {
        scopes().condition(p).unwrap()[0].clone()
    }

    fn params() -> impl Strategy<Value = (String, i64, Option<bool>)> {
        // Values full of the characters that broke the original's encoding.
        ("[a&=:\\\\\"{}, ]{0,3}", -1i64..2, any::<Option<bool>>())
    }

    proptest! {
        /// Two parameter lists share a dependency exactly when they are equal, and every
        /// condition text parses back to itself.
        #[test]
        fn condition_texts_are_injective(
            (a1, a2, a3) in params(),
            (b1, b2, b3) in params(),
            copy in any::<bool>(),
        ) {
            // Half the cases compare a list with an equal copy of itself.
            let b = if copy { (a1.clone(), a2, a3) } else { (b1, b2, b3) };
            let a = Params { name: a1, n: a2, flag: a3 };
            let b = Params { name: b.0, n: b.1, flag: b.2 };
            let same = (&a.name, a.n, a.flag) == (&b.name, b.n, b.flag);
            let (da, db) = (dep_of(&a), dep_of(&b));
            prop_assert_eq!(da == db, same);
            prop_assert_eq!(da.to_string().parse::<Dep>().unwrap(), da.clone());
            prop_assert_eq!(da.kind(), DepKind::Cond);
            prop_assert_ne!(&da, &scopes().kill_switch());
            prop_assert_ne!(&da, &scopes().any_write());
        }
    }
}

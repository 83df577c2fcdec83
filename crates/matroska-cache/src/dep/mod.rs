//! Dependencies: what a cache entry was built from.
//!
//! A [`Dep`] names one thing an entry depends on. Invalidating a dependency drops every entry
//! that declared it. One file per kind of dependency:
//!
//! | kind | constructor | text form |
//! | --- | --- | --- |
//! | one object by id | [`id`] | `id:article:1` |
//! | a named signal | [`tag`] | `tag:homepage` |
//! | a tag in a namespace | [`ntag`], [`Namespace`] | `ntag:billing:invoices` |
//! | an entity's primary key | [`pk`], [`Entity`] | `pk:order_line:7:2` |
//! | a filtered list's scope | [`Scopes`](crate::scopes::Scopes) | `cond:book:{"category"\:"sci-fi"}` |
//!
//! The text form is the original matroska-cache's, with one addition: a `:` or `\` inside a
//! component is escaped (`\:`, `\\`; a line break is `\n` or `\r`). So `Display` and `FromStr`
//! round-trip, and two different dependencies never share a text, which is also their storage
//! key:
//!
//! ```
//! use matroska_cache::{dep, Dep};
//!
//! let a = dep::id("user:admin", 1);
//! let b = dep::id("user", "admin:1");
//! assert_eq!(a.to_string(), r"id:user\:admin:1");
//! assert_eq!(b.to_string(), r"id:user:admin\:1");
//! assert_ne!(a, b);
//! assert_eq!(a.to_string().parse::<Dep>().unwrap(), a);
//! ```

mod id;
mod pk;
mod tag;
mod text;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use id::id;
pub use pk::{pk, pk_columns, Entity, PrimaryKey};
pub use tag::{ntag, tag, Namespace};
pub use text::ParseDepError;

/// One thing a cache entry depends on.
///
/// Build one with [`id`], [`tag`], [`ntag`], [`pk`] or [`Entity::dep`], or parse its text form
/// with [`str::parse`]. Cloning is cheap (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dep {
    /// The canonical, escaped text form. Every constructor and `FromStr` produce the one
    /// canonical text of a dependency, so comparing texts compares dependencies.
    text: Arc<str>,
}

/// The kind of a dependency: the first component of its text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DepKind {
    /// `id:<kind>:<id>`: one object by id.
    Id,
    /// `tag:<name>`: a named signal.
    Tag,
    /// `ntag:<namespace>:<name>`: a tag in a namespace.
    NTag,
    /// `pk:<model>:<key>[:<key>...]`: an entity's (possibly composite) primary key.
    Pk,
    /// `cond:<type>[:<condition>]`: a filter of a [`Scopes`](crate::scopes::Scopes) (the
    /// original's `condition:`), or without a condition the type's kill switch.
    Cond,
}

impl DepKind {
    /// The word that starts the text form.
    pub fn as_str(self) -> &'static str {
        match self {
            DepKind::Id => "id",
            DepKind::Tag => "tag",
            DepKind::NTag => "ntag",
            DepKind::Pk => "pk",
            DepKind::Cond => "cond",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "id" => DepKind::Id,
            "tag" => DepKind::Tag,
            "ntag" => DepKind::NTag,
            "pk" => DepKind::Pk,
            "cond" => DepKind::Cond,
            _ => return None,
        })
    }

    /// How many components follow the kind: `(min, max)`.
    fn arity(self) -> (usize, usize) {
        match self {
            DepKind::Id | DepKind::NTag => (2, 2),
            DepKind::Tag => (1, 1),
            DepKind::Pk => (2, usize::MAX),
            DepKind::Cond => (1, 2),
        }
    }
}

impl Dep {
    /// Builds a dependency from its kind and unescaped components.
    pub(crate) fn from_parts<'a>(kind: DepKind, parts: impl IntoIterator<Item = &'a str>) -> Dep {
        let mut text = String::from(kind.as_str());
        for part in parts {
            text.push(':');
            text::escape_into(part, &mut text);
        }
        Dep { text: text.into() }
    }

    /// The canonical text form, as stored and as printed (`id:article:1`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The kind of this dependency.
    pub fn kind(&self) -> DepKind {
        let word = self.text.split(':').next().unwrap_or_default();
        // Every constructor starts the text with a known kind word.
        DepKind::from_word(word).unwrap_or(DepKind::Tag)
    }

    /// The components after the kind, unescaped: `["article", "1"]` for `id:article:1`.
    pub fn parts(&self) -> Vec<String> {
        let (_, rest) = self.text.split_once(':').unwrap_or((&self.text, ""));
        text::split_unescape(rest)
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dep({:?})", &*self.text)
    }
}

impl FromStr for Dep {
    type Err = ParseDepError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (word, rest) = s
            .split_once(':')
            .ok_or_else(|| ParseDepError::new(s, "expected <kind>:<...>, such as id:article:1"))?;
        let kind = DepKind::from_word(word).ok_or_else(|| {
            ParseDepError::new(s, "unknown kind (expected id, tag, ntag, pk or cond)")
        })?;
        let count = text::validate(rest).map_err(|reason| ParseDepError::new(s, reason))?;
        let (min, max) = kind.arity();
        if count < min || count > max {
            let reason = match kind {
                DepKind::Id => "an id dependency is id:<kind>:<id> (escape ':' inside as '\\:')",
                DepKind::Tag => "a tag dependency is tag:<name> (escape ':' inside as '\\:')",
                DepKind::NTag => "a namespaced tag is ntag:<namespace>:<name>",
                DepKind::Pk => "a primary-key dependency is pk:<model>:<key>[:<key>...]",
                DepKind::Cond => "a scope dependency is cond:<type>[:<condition>]",
            };
            return Err(ParseDepError::new(s, reason));
        }
        // `validate` accepted only canonical escapes, so the input is already canonical.
        Ok(Dep { text: s.into() })
    }
}

impl From<&Dep> for Dep {
    fn from(dep: &Dep) -> Self {
        dep.clone()
    }
}

impl serde::Serialize for Dep {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Dep {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Dependencies without duplicates, in a canonical order.
pub(crate) fn sorted_unique(deps: impl IntoIterator<Item = Dep>) -> Vec<Dep> {
    let mut deps: Vec<Dep> = deps.into_iter().collect();
    deps.sort_unstable();
    deps.dedup();
    deps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_dep() -> impl Strategy<Value = Dep> {
        let s = || any::<String>();
        prop_oneof![
            (s(), s()).prop_map(|(k, i)| id(&k, i)),
            s().prop_map(|n| tag(&n)),
            (s(), s()).prop_map(|(ns, n)| ntag(&ns, &n)),
            (s(), prop::collection::vec(s(), 1..4)).prop_map(|(m, keys)| Dep::from_parts(
                DepKind::Pk,
                [m.as_str()]
                    .into_iter()
                    .chain(keys.iter().map(String::as_str))
            )),
            (s(), prop::option::of(s())).prop_map(|(t, c)| Dep::from_parts(
                DepKind::Cond,
                [Some(t.as_str()), c.as_deref()].into_iter().flatten()
            )),
        ]
    }

    #[test]
    fn original_text_forms() {
        assert_eq!(id("article", 1).to_string(), "id:article:1");
        assert_eq!(tag("homepage").to_string(), "tag:homepage");
        assert_eq!(
            ntag("billing", "invoices").to_string(),
            "ntag:billing:invoices"
        );
        assert_eq!(pk("order_line", (7, 2)).to_string(), "pk:order_line:7:2");
    }

    #[test]
    fn separators_are_escaped() {
        assert_eq!(id(r"a\b", "c:d\ne").to_string(), r"id:a\\b:c\:d\ne");
        assert_ne!(id("user:admin", 1), id("user", "admin:1"));
        assert_ne!(tag("a:b"), ntag("a", "b"));
    }

    #[test]
    fn parse_rejects_malformed_text() {
        for bad in [
            "",
            "id",
            "id:article",
            "id:a:b:c",
            "tag:a:b",
            "ntag:x",
            "pk:model",
            "nope:x",
            r"tag:a\x",
            r"tag:trailing\",
            "ID:a:1",
        ] {
            assert!(bad.parse::<Dep>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn accessors() {
        let d = id("user:admin", 1);
        assert_eq!(d.kind(), DepKind::Id);
        assert_eq!(d.parts(), ["user:admin", "1"]);
        assert_eq!(tag("").parts(), [""]);
        assert_eq!(pk("m", ("a", 2)).parts(), ["m", "a", "2"]);
    }

    proptest! {
        #[test]
        fn text_round_trips(d in any_dep()) {
            let parsed: Dep = d.to_string().parse().unwrap();
            prop_assert_eq!(&parsed, &d);
            prop_assert_eq!(parsed.kind(), d.kind());
            prop_assert_eq!(parsed.parts(), d.parts());
        }

        #[test]
        fn distinct_deps_have_distinct_texts(a in any_dep(), b in any_dep()) {
            // The text is the identity: equal texts must mean equal kinds and components.
            if a.to_string() == b.to_string() {
                prop_assert_eq!(a.kind(), b.kind());
                prop_assert_eq!(a.parts(), b.parts());
            }
            if a.kind() != b.kind() || a.parts() != b.parts() {
                prop_assert_ne!(a.to_string(), b.to_string());
            }
        }

        #[test]
        fn components_survive_escaping(kind in ".*", ident in ".*") {
            let d = id(&kind, &ident);
            prop_assert_eq!(d.parts(), vec![kind, ident]);
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            if let Ok(d) = s.parse::<Dep>() {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}

//! `tag:<name>` and `ntag:<namespace>:<name>`: named signals (the original's `dep.Tag` and
//! `dep.NTag`).

use super::{Dep, DepKind};

/// A named signal: `tag:homepage`.
///
/// Use tags for things that are not one object: "the homepage", "the exchange rates".
///
/// ```
/// use matroska_cache::dep;
///
/// assert_eq!(dep::tag("homepage").to_string(), "tag:homepage");
/// ```
pub fn tag(name: &str) -> Dep {
    Dep::from_parts(DepKind::Tag, [name])
}

/// A tag inside a namespace: `ntag:billing:invoices`.
///
/// Large applications keep their tags apart by namespace, so that two modules that both say
/// "list" do not invalidate each other. [`Namespace`] derives the namespace from a type.
///
/// ```
/// use matroska_cache::dep;
///
/// assert_eq!(dep::ntag("billing", "invoices").to_string(), "ntag:billing:invoices");
/// assert_ne!(dep::ntag("billing", "list"), dep::ntag("shipping", "list"));
/// ```
pub fn ntag(namespace: &str, name: &str) -> Dep {
    Dep::from_parts(DepKind::NTag, [namespace, name])
}

/// A type that names a tag namespace (the original's `NTag` subclasses).
///
/// ```
/// use matroska_cache::dep::Namespace;
///
/// struct Billing;
/// impl Namespace for Billing {
///     const NAMESPACE: &'static str = "billing";
/// }
///
/// assert_eq!(Billing::tag("invoices").to_string(), "ntag:billing:invoices");
/// ```
pub trait Namespace {
    /// The namespace's name.
    const NAMESPACE: &'static str;

    /// The tag `name` in this namespace.
    fn tag(name: &str) -> Dep {
        ntag(Self::NAMESPACE, name)
    }
}

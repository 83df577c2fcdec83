//! `id:<kind>:<id>`: one object by id (the original's `dep.Id`).

use std::fmt::Display;

use super::{Dep, DepKind};

/// A dependency on one object, by its kind and id: `id:article:1`.
///
/// Invalidate it when the object changes.
///
/// ```
/// use matroska_cache::dep;
///
/// assert_eq!(dep::id("article", 1).to_string(), "id:article:1");
/// assert_eq!(dep::id("user", "alice").to_string(), "id:user:alice");
/// ```
pub fn id(kind: &str, id: impl Display) -> Dep {
    let id = id.to_string();
    Dep::from_parts(DepKind::Id, [kind, id.as_str()])
}

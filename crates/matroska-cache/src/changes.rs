//! Which fields changed between two versions of a value (the original's
//! `sa_modified_names`), to pass as `modified` to [`Scopes`](crate::scopes::Scopes).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::{Error, Result};

/// The names of the top-level fields whose values differ between `old` and `new`, sorted:
/// fields present in only one of them count as changed.
///
/// Both must serialize as a struct or map (the names are as serialized, so
/// `#[serde(rename)]` applies); nested values are compared whole, so a change deep inside a
/// field names that field.
///
/// ```
/// use matroska_cache::changes::changed_fields;
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Book { id: u32, title: String, tags: Vec<String> }
///
/// let old = Book { id: 1, title: "Dune".into(), tags: vec!["sf".into()] };
/// let new = Book { id: 1, title: "Dune".into(), tags: vec!["sf".into(), "classic".into()] };
/// assert_eq!(changed_fields(&old, &new)?, ["tags"]);
/// # Ok::<(), matroska_cache::Error>(())
/// ```
pub fn changed_fields<T: Serialize + ?Sized>(old: &T, new: &T) -> Result<Vec<String>> {
    let old = fields(old)?;
    let new = fields(new)?;
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    Ok(names
        .into_iter()
        .filter(|name| old.get(*name) != new.get(*name))
        .cloned()
        .collect())
}

/// The names of `value`'s top-level fields, as serialized.
pub(crate) fn field_names<T: Serialize + ?Sized>(value: &T) -> Result<BTreeSet<String>> {
    Ok(fields(value)?.into_iter().map(|(name, _)| name).collect())
}

fn fields<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::NotAStruct {
            found: kind(&other),
        }),
        Err(source) => Err(Error::Encode {
            key: String::new(),
            source,
        }),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a struct",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn scalars_are_refused() {
        assert!(matches!(
            changed_fields(&1, &2),
            Err(Error::NotAStruct { found: "a number" })
        ));
    }

    #[test]
    fn renamed_and_missing_fields() {
        #[derive(Serialize)]
        struct V {
            #[serde(rename = "cat")]
            category: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<u8>,
        }
        let a = V {
            category: "a",
            note: None,
        };
        let b = V {
            category: "b",
            note: Some(1),
        };
        assert_eq!(changed_fields(&a, &b).unwrap(), ["cat", "note"]);
        assert!(changed_fields(&a, &a).unwrap().is_empty());
    }

    proptest! {
        /// Exactly the keys whose values differ (or exist on one side only) are reported.
        #[test]
        fn reports_exactly_the_differing_keys(
            old in proptest::collection::btree_map("[a-e]", 0..3u8, 0..5),
            new in proptest::collection::btree_map("[a-e]", 0..3u8, 0..5),
        ) {
            let expected: Vec<String> = old.keys().chain(new.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .cloned()
                .collect();
            prop_assert_eq!(changed_fields(&old, &new).unwrap(), expected);
            let same: &BTreeMap<String, u8> = &old;
            prop_assert!(changed_fields(same, same).unwrap().is_empty());
        }
    }
}

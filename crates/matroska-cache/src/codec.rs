//! How values are stored: strings as they are, everything else as JSON.
//!
//! A stored value carries a one-letter [`Format`] tag beside its bytes (the original's `s` and
//! `j` prefixes), so a reader knows how to decode it and a new codec can be added without
//! misreading old entries. In Redis both stay readable with `redis-cli`.
//!
//! Anything that serializes as a JSON string is stored in the string format: a `String`, but
//! also `Some("x")`, a newtype `Name(String)`, a unit enum variant or a `char`. Decoding feeds
//! the text back as a JSON string value, so each of those comes back as the type that wrote it.
//!
//! What JSON itself cannot tell apart does not round-trip: `Some(None)` and `Some(())` read back
//! as `None`, and non-finite floats (`NaN`, infinities) are written as `null`. Maps need keys
//! that serialize as strings or numbers ([`Error::Encode`] otherwise).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ttl::{self, Age, Freshness};

/// The encoding of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// A UTF-8 string, stored as it is.
    Str,
    /// JSON.
    Json,
}

impl Format {
    /// The tag stored beside the value.
    pub fn tag(self) -> &'static str {
        match self {
            Format::Str => "s",
            Format::Json => "j",
        }
    }

    /// The format a stored tag names, if it is known.
    pub fn from_tag(tag: &[u8]) -> Option<Format> {
        match tag {
            b"s" => Some(Format::Str),
            b"j" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A value as a backend stores it: its format, its bytes, and for read-through entries with
/// fail-safe or refresh-ahead, its [`Freshness`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// How `bytes` decode.
    pub format: Format,
    /// The encoded value.
    pub bytes: Bytes,
    /// When the entry stops being fresh (it is kept longer as a fallback), and when it is
    /// due for a refresh; `None` for entries that are fresh until their TTL.
    pub freshness: Option<Freshness>,
}

impl Encoded {
    /// A value in `format` without [`Freshness`].
    pub fn new(format: Format, bytes: impl Into<Bytes>) -> Encoded {
        Encoded {
            format,
            bytes: bytes.into(),
            freshness: None,
        }
    }

    /// How old the entry is now, by its [`Freshness`] (one without any is fresh).
    pub fn age(&self) -> Age {
        ttl::age_of(self.freshness.as_ref())
    }

    /// Whether the entry is within its TTL (not only a fail-safe fallback).
    pub fn is_fresh(&self) -> bool {
        self.age() != Age::Stale
    }

    /// This value with `freshness`.
    pub fn with_freshness(self, freshness: Option<Freshness>) -> Encoded {
        Encoded { freshness, ..self }
    }

    /// Encodes `value`: a string (anything that serializes as one) as its UTF-8 bytes,
    /// anything else as JSON.
    pub fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Encoded> {
        let encode_error = |source| Error::Encode {
            key: key.to_owned(),
            source,
        };
        let json = serde_json::to_vec(value).map_err(encode_error)?;
        if json.first() == Some(&b'"') {
            // A JSON string: store it unquoted and unescaped, readable as it is.
            let text: String = serde_json::from_slice(&json).map_err(encode_error)?;
            return Ok(Encoded::new(Format::Str, text.into_bytes()));
        }
        Ok(Encoded::new(Format::Json, json))
    }

    /// Decodes into `T`, or says why it cannot.
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let decode_error = |reason: String| Error::Decode {
            key: key.to_owned(),
            reason,
        };
        match self.format {
            Format::Json => {
                serde_json::from_slice(&self.bytes).map_err(|e| decode_error(e.to_string()))
            }
            Format::Str => {
                let text = std::str::from_utf8(&self.bytes)
                    .map_err(|e| decode_error(format!("stored string is not UTF-8: {e}")))?;
                // The value was written as a JSON string: read it back as one, so that
                // options, newtypes and enums over a string decode (a plain string
                // deserializer knows none of them). `String` takes the text without a copy.
                T::deserialize(serde_json::Value::String(text.to_owned()))
                    .map_err(|e| decode_error(e.to_string()))
            }
        }
    }
}

/// `value` with the keys of every object sorted, at every level: equal data gives equal
/// text whatever order its maps were built in, and whether or not some crate turns on
/// serde_json's `preserve_order`. (Sequences keep their order: it is part of the data.)
pub(crate) fn canonical_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical_json(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical_json).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Colour {
        Red,
        Rgb(u8, u8, u8),
    }

    #[test]
    fn strings_are_stored_as_they_are() {
        let e = Encoded::encode("k", "héllo \"world\"").unwrap();
        assert_eq!(e.format, Format::Str);
        assert_eq!(&e.bytes[..], "héllo \"world\"".as_bytes());
        assert_eq!(e.decode::<String>("k").unwrap(), "héllo \"world\"");
    }

    #[test]
    fn other_values_are_json() {
        let e = Encoded::encode("k", &vec![1, 2]).unwrap();
        assert_eq!(e.format, Format::Json);
        assert_eq!(&e.bytes[..], b"[1,2]");
        assert_eq!(e.decode::<Vec<u8>>("k").unwrap(), [1, 2]);
    }

    #[test]
    fn unit_variants_and_chars_round_trip_through_the_string_format() {
        let e = Encoded::encode("k", &Colour::Red).unwrap();
        assert_eq!(e.format, Format::Str);
        assert_eq!(e.decode::<Colour>("k").unwrap(), Colour::Red);
        let e = Encoded::encode("k", &Colour::Rgb(1, 2, 3)).unwrap();
        assert_eq!(e.decode::<Colour>("k").unwrap(), Colour::Rgb(1, 2, 3));
        assert_eq!(
            Encoded::encode("k", &'x')
                .unwrap()
                .decode::<char>("k")
                .unwrap(),
            'x'
        );
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = Encoded::encode("k", "text").unwrap();
        assert!(matches!(e.decode::<u32>("k"), Err(Error::Decode { .. })));
        let e = Encoded::encode("k", &[1, 2]).unwrap();
        assert!(matches!(e.decode::<String>("k"), Err(Error::Decode { .. })));
        let bad = Encoded::new(Format::Str, Bytes::from_static(b"\xff"));
        assert!(matches!(
            bad.decode::<String>("k"),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn unencodable_is_an_error() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        assert!(matches!(
            Encoded::encode("k", &map),
            Err(Error::Encode { .. })
        ));
    }

    /// A newtype over a string: it serializes as a bare JSON string.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Name(String);

    /// One variant of each serde kind.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(String),
        Tuple(i64, String),
        Struct { name: Option<Name>, list: Vec<u32> },
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Nested {
        name: Name,
        shape: Shape,
        maybe: Option<String>,
        map: BTreeMap<String, Option<Shape>>,
        inner: Option<Box<Nested>>,
    }

    /// Any string, and strings that look like JSON, like our own stored header, or are empty.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC*",
            Just(String::new()),
            prop_oneof![
                Just("null"),
                Just("true"),
                Just("1"),
                Just("-0.5e3"),
                Just("[]"),
                Just("{}"),
                Just("\"\""),
            ]
            .prop_map(str::to_owned),
            "[\\[{\"][ -~]{0,20}[\\]}\"]",
            "[0-9]{20}[sj][0-9]{10}\\[\"[a-z:]{0,8}\"\\][ -~]{0,10}",
        ]
    }

    fn name() -> impl Strategy<Value = Name> {
        text().prop_map(Name)
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            text().prop_map(Shape::Newtype),
            (any::<i64>(), text()).prop_map(|(n, s)| Shape::Tuple(n, s)),
            (
                prop::option::of(name()),
                prop::collection::vec(any::<u32>(), 0..4)
            )
                .prop_map(|(name, list)| Shape::Struct { name, list }),
        ]
    }

    fn nested() -> impl Strategy<Value = Nested> {
        let leaf = (
            name(),
            shape(),
            prop::option::of(text()),
            prop::collection::btree_map(text(), prop::option::of(shape()), 0..3),
        )
            .prop_map(|(name, shape, maybe, map)| Nested {
                name,
                shape,
                maybe,
                map,
                inner: None,
            });
        leaf.prop_recursive(3, 8, 1, |inner| {
            (inner.clone(), inner).prop_map(|(mut outer, inner)| {
                outer.inner = Some(Box::new(inner));
                outer
            })
        })
    }

    /// Encodes and decodes `value` as a backend would store it.
    fn round_trip<T>(value: &T) -> std::result::Result<(), TestCaseError>
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let encoded =
            Encoded::encode("k", value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = Encoded::new(
            Format::from_tag(encoded.format.tag().as_bytes()).unwrap(),
            Bytes::copy_from_slice(&encoded.bytes),
        );
        let back: T = stored
            .decode("k")
            .map_err(|e| TestCaseError::fail(format!("{value:?}: {e}")))?;
        prop_assert_eq!(&back, value);
        Ok(())
    }

    #[test]
    fn reported_shapes_decode() {
        // Each of these was stored in the string format and then failed to decode.
        round_trip(&Some("x".to_owned())).unwrap();
        round_trip(&Name("x".to_owned())).unwrap();
        round_trip(&Some(Name("x".to_owned()))).unwrap();
        round_trip(&Shape::Newtype("x".to_owned())).unwrap();
    }

    proptest! {
        #[test]
        fn every_serde_shape_round_trips(
            s in text(),
            n in name(),
            sh in shape(),
            nest in nested(),
            map in prop::collection::hash_map(text(), prop::option::of(name()), 0..4),
            c in any::<char>(),
        ) {
            round_trip(&s)?;
            round_trip(&Some(s.clone()))?;
            round_trip(&None::<String>)?;
            round_trip(&n)?;
            round_trip(&Some(n))?;
            round_trip(&sh)?;
            round_trip(&Some(sh.clone()))?;
            round_trip(&vec![sh.clone(), Shape::Unit])?;
            round_trip(&(s, sh, c))?;
            round_trip(&nest)?;
            round_trip(&Some(Box::new(nest)))?;
            round_trip(&map)?;
            round_trip(&c)?;
        }

        #[test]
        fn strings_round_trip(s in any::<String>()) {
            let e = Encoded::encode("k", &s).unwrap();
            prop_assert_eq!(e.format, Format::Str);
            prop_assert_eq!(e.decode::<String>("k").unwrap(), s);
        }

        #[test]
        fn json_values_round_trip(v in prop::collection::btree_map(any::<String>(), any::<(i64, bool, Option<String>)>(), 0..5)) {
            let e = Encoded::encode("k", &v).unwrap();
            prop_assert_eq!(e.decode::<std::collections::BTreeMap<String, (i64, bool, Option<String>)>>("k").unwrap(), v);
        }

        #[test]
        fn format_tags_round_trip(f in prop_oneof![Just(Format::Str), Just(Format::Json)]) {
            prop_assert_eq!(Format::from_tag(f.tag().as_bytes()), Some(f));
        }
    }
}

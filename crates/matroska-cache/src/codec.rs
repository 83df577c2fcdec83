//! How values are stored: strings as they are, everything else as JSON.
//!
//! A stored value carries a one-letter [`Format`] tag beside its bytes (the original's `s` and
//! `j` prefixes), so a reader knows how to decode it and a new codec can be added without
//! misreading old entries. In Redis both stay readable with `redis-cli`: the value is the `v`
//! field of the entry's hash, the tag its `f` field.

use bytes::Bytes;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

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

/// A value as a backend stores it: its format and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// How `bytes` decode.
    pub format: Format,
    /// The encoded value.
    pub bytes: Bytes,
}

impl Encoded {
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
            return Ok(Encoded {
                format: Format::Str,
                bytes: Bytes::from(text.into_bytes()),
            });
        }
        Ok(Encoded {
            format: Format::Json,
            bytes: Bytes::from(json),
        })
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
                T::deserialize(StrDeserializer::<ValueError>::new(text))
                    .map_err(|e| decode_error(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

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
        let bad = Encoded {
            format: Format::Str,
            bytes: Bytes::from_static(b"\xff"),
        };
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

    proptest! {
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

//! How one entry is stored: a single Redis string, so that `get` is one `GET` and the entry
//! costs one key with its TTL.
//!
//! ```text
//! <generation: 20 digits><format tag: 1 byte><length of deps: 10 digits><deps JSON><value>
//! 00000000000000000042s0000000016["id:article:1"]<h1>Hello</h1>
//! ```
//!
//! Everything before the value is ASCII, so the entry stays readable with `redis-cli GET`. The
//! generation comes first and has a fixed width: scripts compare it with `GETRANGE key 0 19`
//! without reading the value. `put.lua` writes the generation in front of the rest, which the
//! client builds ([`tail`]).

use crate::codec::{Encoded, Format};
use crate::error::{Error, Result};

/// Digits of the generation.
pub(crate) const GENERATION_WIDTH: usize = 20;
/// Digits of the dependency list's length.
const DEPS_LEN_WIDTH: usize = 10;
/// Bytes before the dependency list.
const HEADER: usize = GENERATION_WIDTH + 1 + DEPS_LEN_WIDTH;

/// An entry as read back from Redis, borrowing the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredEntry<'a> {
    /// The generation of the put that wrote it (see the dependency index).
    pub generation: u64,
    /// How `value` decodes.
    pub format: Format,
    /// The dependencies' texts as a JSON list.
    pub deps_json: &'a str,
    /// The encoded value.
    pub value: &'a [u8],
}

impl<'a> StoredEntry<'a> {
    /// Parses a stored entry; `key` names it in the error if the bytes are not an entry.
    pub fn parse(key: &str, bytes: &'a [u8]) -> Result<StoredEntry<'a>> {
        let (format, start) = value_start(key, bytes)?;
        let generation = generation(key, bytes)?;
        let deps_json = std::str::from_utf8(&bytes[HEADER..start])
            .map_err(|_| corrupt(key, "dependency list"))?;
        Ok(StoredEntry {
            generation,
            format,
            deps_json,
            value: &bytes[start..],
        })
    }
}

/// The format and where the value starts, without reading the generation or the
/// dependency list (the `get` path needs neither).
pub(crate) fn value_start(key: &str, bytes: &[u8]) -> Result<(Format, usize)> {
    if bytes.len() < HEADER {
        return Err(corrupt(key, "shorter than its header"));
    }
    let format = Format::from_tag(&bytes[GENERATION_WIDTH..GENERATION_WIDTH + 1])
        .ok_or_else(|| corrupt(key, "unknown format tag"))?;
    let deps_len = digits(&bytes[GENERATION_WIDTH + 1..HEADER])
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| corrupt(key, "dependency list length"))?;
    match HEADER.checked_add(deps_len) {
        Some(start) if start <= bytes.len() => Ok((format, start)),
        _ => Err(corrupt(key, "dependency list longer than the entry")),
    }
}

/// The generation of a stored entry (or of its first 20 bytes).
pub(crate) fn generation(key: &str, bytes: &[u8]) -> Result<u64> {
    bytes
        .get(..GENERATION_WIDTH)
        .and_then(digits)
        .ok_or_else(|| corrupt(key, "generation"))
}

/// A generation as entries store it (and as scripts compare it): 20 digits.
pub(crate) fn generation_text(generation: u64) -> String {
    format!("{generation:0GENERATION_WIDTH$}")
}

fn corrupt(key: &str, detail: &str) -> Error {
    Error::Corrupt {
        key: key.to_owned(),
        detail: format!("stored entry: {detail}"),
    }
}

/// Everything after the generation: format tag, dependency list and value.
pub(crate) fn tail(value: &Encoded, deps_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + DEPS_LEN_WIDTH + deps_json.len() + value.bytes.len());
    out.extend_from_slice(value.format.tag().as_bytes());
    out.extend_from_slice(
        format!("{:0width$}", deps_json.len(), width = DEPS_LEN_WIDTH).as_bytes(),
    );
    out.extend_from_slice(deps_json.as_bytes());
    out.extend_from_slice(&value.bytes);
    out
}

/// A fixed-width run of ASCII digits as a number.
fn digits(bytes: &[u8]) -> Option<u64> {
    if !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// What `put.lua` does: the generation in front of the tail.
    fn stored(generation: u64, tail: &[u8]) -> Vec<u8> {
        let mut out = generation_text(generation).into_bytes();
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn layout_is_readable() {
        let value = Encoded {
            format: Format::Str,
            bytes: Bytes::from_static(b"<h1>Hello</h1>"),
        };
        let bytes = stored(42, &tail(&value, r#"["id:article:1"]"#));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"00000000000000000042s0000000016["id:article:1"]<h1>Hello</h1>"#
        );
    }

    #[test]
    fn damaged_entries_are_corrupt_not_panics() {
        for bad in [
            &b""[..],
            b"0000000000000000004",
            b"0000000000000000004xs0000000000",
            b"00000000000000000042x0000000000",
            b"00000000000000000042s00000000z0",
            b"00000000000000000042s0000000099[]",
            b"99999999999999999999s0000000000",
        ] {
            assert!(
                matches!(StoredEntry::parse("k", bad), Err(Error::Corrupt { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn round_trips(
            generation in 0..=u64::MAX,
            json in any::<bool>(),
            deps in proptest::collection::vec("\\PC*", 0..4),
            value in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let deps_json = serde_json::to_string(&deps).unwrap();
            let format = if json { Format::Json } else { Format::Str };
            let encoded = Encoded { format, bytes: Bytes::from(value.clone()) };
            let bytes = stored(generation, &tail(&encoded, &deps_json));
            let entry = StoredEntry::parse("k", &bytes).unwrap();
            prop_assert_eq!(entry.generation, generation);
            prop_assert_eq!(entry.format, format);
            prop_assert_eq!(entry.deps_json, deps_json.as_str());
            prop_assert_eq!(entry.value, &value[..]);
            let (f, start) = value_start("k", &bytes).unwrap();
            prop_assert_eq!((f, &bytes[start..]), (format, &value[..]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = StoredEntry::parse("k", &bytes);
            let _ = value_start("k", &bytes);
        }
    }
}

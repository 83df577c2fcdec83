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
//!
//! An entry with [`Freshness`] (fail-safe or refresh-ahead) has its format tag in upper case
//! and the two instants, 20 digits each, between the dependency list and the value:
//!
//! ```text
//! 00000000000000000042S0000000016["id:article:1"]0000000001796000060000000000000179600003000<h1>Hello</h1>
//! ```
//!
//! A build that predates freshness reads the upper-case tag as a damaged entry (a cache
//! fault, computed instead), never as a fresh value past its TTL. `begin.lua` and `has.lua`
//! read the instants the same way.

use crate::codec::{Encoded, Format};
use crate::error::{Error, Result};
use crate::ttl::Freshness;

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
    /// When it stops being fresh and is due for a refresh, if it has a fallback window.
    pub freshness: Option<Freshness>,
    /// The encoded value.
    pub value: &'a [u8],
}

impl<'a> StoredEntry<'a> {
    /// Parses a stored entry; `key` names it in the error if the bytes are not an entry.
    pub fn parse(key: &str, bytes: &'a [u8]) -> Result<StoredEntry<'a>> {
        let layout = layout(key, bytes)?;
        let generation = generation(key, bytes)?;
        let deps_json = std::str::from_utf8(&bytes[HEADER..layout.deps_end])
            .map_err(|_| corrupt(key, "dependency list"))?;
        Ok(StoredEntry {
            generation,
            format: layout.format,
            deps_json,
            freshness: layout.freshness,
            value: &bytes[layout.value_start..],
        })
    }
}

/// Where the parts of a stored entry are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) format: Format,
    pub(crate) freshness: Option<Freshness>,
    /// Where the dependency list ends.
    deps_end: usize,
    pub(crate) value_start: usize,
}

/// Digits of each instant of an entry's freshness.
const INSTANT_WIDTH: usize = 20;

/// The layout of a stored entry, without reading the generation or the dependency list
/// (the `get` path needs neither).
pub(crate) fn layout(key: &str, bytes: &[u8]) -> Result<Layout> {
    if bytes.len() < HEADER {
        return Err(corrupt(key, "shorter than its header"));
    }
    let tag = bytes[GENERATION_WIDTH];
    let timed = tag.is_ascii_uppercase();
    let format = Format::from_tag(&[tag.to_ascii_lowercase()])
        .ok_or_else(|| corrupt(key, "unknown format tag"))?;
    let deps_len = digits(&bytes[GENERATION_WIDTH + 1..HEADER])
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| corrupt(key, "dependency list length"))?;
    let deps_end = match HEADER.checked_add(deps_len) {
        Some(end) if end <= bytes.len() => end,
        _ => return Err(corrupt(key, "dependency list longer than the entry")),
    };
    if !timed {
        return Ok(Layout {
            format,
            freshness: None,
            deps_end,
            value_start: deps_end,
        });
    }
    let instants = bytes
        .get(deps_end..deps_end + 2 * INSTANT_WIDTH)
        .ok_or_else(|| corrupt(key, "freshness"))?;
    let (fresh_until, refresh_at) = instants.split_at(INSTANT_WIDTH);
    let freshness = digits(fresh_until)
        .zip(digits(refresh_at))
        .map(|(fresh_until_ms, refresh_at_ms)| Freshness {
            fresh_until_ms,
            refresh_at_ms,
        })
        .ok_or_else(|| corrupt(key, "freshness"))?;
    Ok(Layout {
        format,
        freshness: Some(freshness),
        deps_end,
        value_start: deps_end + 2 * INSTANT_WIDTH,
    })
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

/// An instant as entries store it (and as scripts compare it): 20 digits.
pub(crate) fn instant_text(ms: u64) -> String {
    format!("{ms:0INSTANT_WIDTH$}")
}

fn corrupt(key: &str, detail: &str) -> Error {
    Error::Corrupt {
        key: key.to_owned(),
        detail: format!("stored entry: {detail}"),
    }
}

/// Everything after the generation: format tag, dependency list, freshness and value.
pub(crate) fn tail(value: &Encoded, deps_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        1 + DEPS_LEN_WIDTH + deps_json.len() + 2 * INSTANT_WIDTH + value.bytes.len(),
    );
    let tag = value.format.tag();
    match value.freshness {
        Some(_) => out.extend_from_slice(tag.to_ascii_uppercase().as_bytes()),
        None => out.extend_from_slice(tag.as_bytes()),
    }
    out.extend_from_slice(
        format!("{:0width$}", deps_json.len(), width = DEPS_LEN_WIDTH).as_bytes(),
    );
    out.extend_from_slice(deps_json.as_bytes());
    if let Some(f) = value.freshness {
        let (until, refresh) = (f.fresh_until_ms, f.refresh_at_ms);
        out.extend_from_slice(instant_text(until).as_bytes());
        out.extend_from_slice(instant_text(refresh).as_bytes());
    }
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
        let value = Encoded::new(Format::Str, Bytes::from_static(b"<h1>Hello</h1>"));
        let bytes = stored(42, &tail(&value, r#"["id:article:1"]"#));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"00000000000000000042s0000000016["id:article:1"]<h1>Hello</h1>"#
        );
        let timed = value.with_freshness(Some(Freshness {
            fresh_until_ms: 1_796_000_060_000,
            refresh_at_ms: 1_796_000_030_000,
        }));
        let bytes = stored(42, &tail(&timed, r#"["id:article:1"]"#));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"00000000000000000042S0000000016["id:article:1"]0000000179600006000000000001796000030000<h1>Hello</h1>"#
        );
        assert_eq!(
            StoredEntry::parse("k", &bytes).unwrap().freshness,
            timed.freshness
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
            b"00000000000000000042S0000000000",
            b"00000000000000000042S000000000000000000000000000001x000000000000000000001",
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
            freshness in proptest::option::of((any::<u64>(), any::<u64>())),
        ) {
            let deps_json = serde_json::to_string(&deps).unwrap();
            let format = if json { Format::Json } else { Format::Str };
            let freshness = freshness.map(|(fresh_until_ms, refresh_at_ms)| Freshness { fresh_until_ms, refresh_at_ms });
            let encoded = Encoded::new(format, value.clone()).with_freshness(freshness);
            let bytes = stored(generation, &tail(&encoded, &deps_json));
            let entry = StoredEntry::parse("k", &bytes).unwrap();
            prop_assert_eq!(entry.generation, generation);
            prop_assert_eq!(entry.format, format);
            prop_assert_eq!(entry.deps_json, deps_json.as_str());
            prop_assert_eq!(entry.freshness, freshness);
            prop_assert_eq!(entry.value, &value[..]);
            let layout = layout("k", &bytes).unwrap();
            prop_assert_eq!((layout.format, layout.freshness, &bytes[layout.value_start..]), (format, freshness, &value[..]));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = StoredEntry::parse("k", &bytes);
            let _ = layout("k", &bytes);
        }
    }
}

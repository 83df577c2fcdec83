//! Keys: the one length rule of both backends.
//!
//! A key is copied into the index of every dependency of its entry, and those indexes have no
//! TTL (an index must outlive any entry it names), so no eviction policy frees them until a
//! prune pass finds the entry gone. A key that comes from a client (a URL, a search term) could
//! otherwise pin memory at the key's length times the entry's dependency count. Writes refuse
//! keys longer than [`MAX_KEY_LEN`] with [`Error::KeyTooLong`]; reads of such keys find
//! nothing, at no cost.
//!
//! Keys beginning with [`RESERVED`] belong to integrations (the HTTP layer): no
//! [`#[cached]`](crate::cached) key starts with it, and applications must not write such keys
//! themselves.

use crate::error::{Error, Result};

/// The longest key a write accepts, in bytes (1 KiB).
///
/// [`#[cached]`](crate::cached) functions whose arguments encode longer store under a SHA-256
/// digest of them, and the HTTP layer digests long URLs itself, so only keys an application
/// builds by hand can meet this limit.
pub const MAX_KEY_LEN: usize = 1024;

/// The first character of every key the HTTP layer writes (U+0001): application keys and
/// `#[cached]` keys never start with it, so no application key can equal a page's key.
pub const RESERVED: char = '\u{1}';

/// `Ok` if a write may store under `key`, else [`Error::KeyTooLong`].
pub(crate) fn check(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLong {
            length: key.len(),
            head: head(key).to_owned(),
        });
    }
    Ok(())
}

/// The first 64 bytes of `key` (at a character boundary), to name it in errors and logs.
pub(crate) fn head(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert!(check("").is_ok());
        assert!(check(&"k".repeat(MAX_KEY_LEN)).is_ok());
        let long = "é".repeat(MAX_KEY_LEN);
        match check(&long) {
            Err(Error::KeyTooLong { length, head }) => {
                assert_eq!(length, long.len());
                assert!(head.len() <= 64 && long.starts_with(&head));
            }
            other => panic!("{other:?}"),
        }
    }
}

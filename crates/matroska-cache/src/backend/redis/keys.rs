//! The Redis key layout of one prefix.
//!
//! ```text
//! {<prefix>}:d:<key>     string: the entry, generation and dependencies in front of the value (entry.rs)
//! {<prefix>}:r:<dep>     hash: the reverse index of one dependency  <key> = generation
//! {<prefix>}:f           hash: the fence table, bucket -> generation at which the last
//!                        invalidation of a dependency in that bucket began
//! {<prefix>}:l:<key>     string: the lease on computing <key>, with a TTL
//! {<prefix>}:s           string: the prefix's generation counter
//! {<prefix>}:e           string: the epoch (random), renewed when the prefix's state is lost
//! {<prefix>}:p           string: held (with a TTL) by the process running the periodic prune
//! ```
//!
//! The prefix is the Redis Cluster hash tag, so every key of one cache lives in one slot and a
//! script may touch any of them atomically; separate prefixes spread over the cluster. Inside
//! the braces the prefix is escaped (`%` → `%25`, `{` → `%7B`, `}` → `%7D`), so the first `}`
//! always ends it: no prefix and key can produce another prefix's key (the original let prefix
//! `a` read prefix `a::data`'s entries). What follows the type letter is the key or the
//! dependency text verbatim, which is unambiguous because it runs to the end.

use crate::dep::Dep;
use crate::error::{Error, Result};

/// Buckets of the fence table. More buckets refuse fewer fenced puts for another dependency's
/// invalidation (a put with d dependencies, computed while k other dependencies are
/// invalidated, is refused needlessly with probability about d * k / FENCE_BUCKETS) and cost
/// about 70 bytes each once used.
pub(crate) const FENCE_BUCKETS: u64 = 16_384;

/// The fence bucket of `dep`: FNV-1a of its text, mixed with MurmurHash3's finalizer (FNV's
/// low bits alone spread ids that differ in their last digits poorly). Every process and
/// version must agree on it, so it is spelled out here rather than taken from a hasher whose
/// output may change.
pub(crate) fn fence_bucket(dep: &Dep) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dep.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash % FENCE_BUCKETS
}

/// Builds and parses the Redis keys of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpace {
    /// `{<escaped prefix>}`.
    tag: String,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        if prefix.is_empty() {
            return Err(Error::EmptyPrefix);
        }
        let mut tag = String::with_capacity(prefix.len() + 2);
        tag.push('{');
        for c in prefix.chars() {
            match c {
                '%' => tag.push_str("%25"),
                '{' => tag.push_str("%7B"),
                '}' => tag.push_str("%7D"),
                c => tag.push(c),
            }
        }
        tag.push('}');
        Ok(KeySpace { tag })
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.tag.len() + kind.len() + rest.len() + 2);
        k.push_str(&self.tag);
        k.push(':');
        k.push_str(kind);
        k.push(':');
        k.push_str(rest);
        k
    }

    /// The hash that holds the entry under `key`.
    pub(crate) fn data(&self, key: &str) -> String {
        self.key("d", key)
    }

    /// The reverse index of `dep`.
    pub(crate) fn index(&self, dep: &Dep) -> String {
        self.key("r", dep.as_str())
    }

    /// The lease on computing the entry under `key` (read-through across processes).
    pub(crate) fn lease(&self, key: &str) -> String {
        self.key("l", key)
    }

    /// The generation counter.
    pub(crate) fn sequence(&self) -> String {
        format!("{}:s", self.tag)
    }

    /// The fence table (see `invalidate.lua`).
    pub(crate) fn fences(&self) -> String {
        format!("{}:f", self.tag)
    }

    /// The epoch: `"<floor> <run id>"`, renewed when the server restarts or the prefix is
    /// flushed (see `epoch.lua`).
    pub(crate) fn epoch(&self) -> String {
        format!("{}:e", self.tag)
    }

    /// The lock that lets one process at a time run the periodic prune.
    pub(crate) fn prune_lock(&self) -> String {
        format!("{}:p", self.tag)
    }

    /// The type letter of a key of this prefix (`d`, `r`, `s`, ...), if it is one.
    pub(crate) fn kind_of<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        let rest = redis_key.strip_prefix(&self.tag)?.strip_prefix(':')?;
        Some(rest.split(':').next().unwrap_or(rest))
    }

    /// A `SCAN MATCH` pattern for the keys of one type (`"d"`, `"r"`), or all of them (`"*"`).
    pub(crate) fn pattern(&self, kind: &str) -> String {
        let mut p = String::new();
        for c in self.tag.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push(':');
        p.push_str(kind);
        if kind != "*" {
            p.push_str(":*");
        }
        p
    }

    /// The dependency whose index is `redis_key`, if it is an index key of this prefix.
    #[cfg(test)]
    pub(crate) fn dep_of_index(&self, redis_key: &str) -> Option<Dep> {
        redis_key
            .strip_prefix(&self.tag)?
            .strip_prefix(":r:")?
            .parse()
            .ok()
    }

    /// The cache key of the entry `redis_key`, if it is an entry of this prefix.
    #[cfg(test)]
    pub(crate) fn key_of_data<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        redis_key.strip_prefix(&self.tag)?.strip_prefix(":d:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let ks = KeySpace::new("cache").unwrap();
        assert_eq!(ks.data("articles-list"), "{cache}:d:articles-list");
        assert_eq!(
            ks.index(&crate::dep::id("article", 1)),
            "{cache}:r:id:article:1"
        );
        assert_eq!(ks.sequence(), "{cache}:s");
        assert_eq!(
            KeySpace::new("a}b{%").unwrap().data("k"),
            "{a%7Db%7B%25}:d:k"
        );
        assert_eq!(KeySpace::new("a*").unwrap().pattern("r"), r"{a\*}:r:*");
        assert!(matches!(KeySpace::new(""), Err(Error::EmptyPrefix)));
    }

    #[test]
    fn fence_buckets_are_stable_and_spread() {
        // Pinned (computed independently): processes of different versions share the table.
        assert_eq!(fence_bucket(&crate::dep::id("article", 1)), 13113);
        assert_eq!(fence_bucket(&crate::dep::tag("")), 1109);
        let mut used = std::collections::HashSet::new();
        for i in 0..10_000 {
            used.insert(fence_bucket(&crate::dep::id("article", i)));
        }
        assert!(
            used.len() > 7_000,
            "{} buckets for 10,000 dependencies",
            used.len()
        );
    }

    #[test]
    fn original_tenant_leak_is_closed() {
        // The original: prefix "a" + key "data::k" == prefix "a::data" + key "k".
        let a = KeySpace::new("a").unwrap();
        let b = KeySpace::new("a::data").unwrap();
        assert_ne!(a.data("data::k"), b.data("k"));
        assert_eq!(a.key_of_data(&b.data("k")), None);
    }

    /// The hash tag Redis Cluster would use: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    proptest! {
        #[test]
        fn keys_never_collide(p1 in ".+", k1 in ".*", p2 in ".+", k2 in ".*") {
            let (a, b) = (KeySpace::new(&p1).unwrap(), KeySpace::new(&p2).unwrap());
            if (&p1, &k1) != (&p2, &k2) {
                prop_assert_ne!(a.data(&k1), b.data(&k2));
            }
            // An entry key never equals an index key or the counter, whatever the texts.
            prop_assert_ne!(a.data(&k1), b.index(&crate::dep::tag(&k2)));
            prop_assert_ne!(a.data(&k1), b.sequence());
            prop_assert_ne!(a.data(&k1), b.lease(&k2));
        }

        #[test]
        fn keys_parse_back_and_share_one_slot(p in ".+", k in ".*", name in ".*") {
            let ks = KeySpace::new(&p).unwrap();
            let dep = crate::dep::tag(&name);
            let (data, index, sequence) = (ks.data(&k), ks.index(&dep), ks.sequence());
            prop_assert_eq!(ks.key_of_data(&data), Some(k.as_str()));
            prop_assert_eq!(ks.dep_of_index(&index), Some(dep.clone()));
            let tag = hash_tag(&sequence);
            prop_assert!(!tag.is_empty());
            prop_assert_eq!(hash_tag(&data), tag);
            prop_assert_eq!(hash_tag(&index), tag);
        }
    }
}

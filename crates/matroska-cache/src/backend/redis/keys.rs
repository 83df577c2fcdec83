//! The Redis key layout of one prefix.
//!
//! ```text
//! {<prefix>}:d:<key>     string: the entry, generation and dependencies in front of the value (entry.rs)
//! {<prefix>}:r:<dep>     hash: the reverse index of one dependency  <key> = generation
//! {<prefix>}:f           hash: the fence table, bucket -> generation at which the last
//!                        invalidation of a dependency in that bucket began
//! {<prefix>}:h:<dep>     string: with several shards, the directory of <dep> in its home
//!                        shard: a bitmap of the shards that hold dependents of it
//! {<prefix>}:t:<dep>     string: a directory being pruned (its tombstone), and
//! {<prefix>}:o:<dep>     string: the token of the pruning pass that owns it
//! {<prefix>}:i           string: with several shards, set while the shard's directories may
//!                        have lost bits (a new epoch), until a repair pass rebuilt them
//! {<prefix>}:l:<key>     string: the lease on computing <key>, with a TTL
//! {<prefix>}:s           string: the prefix's generation counter
//! {<prefix>}:e           string: the epoch "<floor> <run id>", renewed when the state is lost
//! {<prefix>}:g           string: the ticket floor: fenced puts with older tickets are refused
//! {<prefix>}:p           string: held (with a TTL) by the process running the periodic prune
//! {<prefix>}:w           string: a counter written before a `WAIT` (see invalidate.rs)
//! {<prefix>}:n           string: the number of shards every process of the prefix uses
//!                        (always under the unsharded tag, whatever the number)
//! {<prefix>}:k           string: the directory repair's lock (unsharded tag, with a TTL)
//! {<prefix>}:q           hash: the directory repair's progress (unsharded tag)
//! ```
//!
//! The prefix is the Redis Cluster hash tag, so every key of one cache lives in one slot and a
//! script may touch any of them atomically; separate prefixes spread over the cluster. Inside
//! the braces the prefix is escaped (`%` → `%25`, `{` → `%7B`, `}` → `%7D`), so the first `}`
//! always ends it, and `#` → `%23`, so a sharded tag `{<prefix>#<n>}` is no other prefix's
//! tag: no prefix and key can produce another prefix's key (the original let prefix
//! `a` read prefix `a::data`'s entries). What follows the type letter is the key or the
//! dependency text verbatim, which is unambiguous because it runs to the end.

use std::collections::HashMap;

use crate::dep::Dep;
use crate::error::{Error, Result};

/// Buckets of the fence table of a cache of one shard. More buckets refuse fewer fenced puts
/// for another dependency's invalidation (a put with d dependencies, computed while k other
/// dependencies are invalidated, is refused needlessly with probability about d * k /
/// buckets) and cost about 70 bytes each once used.
pub(crate) const FENCE_BUCKETS: u64 = 16_384;

/// The fewest buckets of each shard's fence table in a sharded cache. The table of `S` shards
/// has `FENCE_BUCKETS / S` buckets but at least this many: about 1.1 MB of fence tables in
/// all up to 16 shards, 72 KB per shard beyond (9 MB at most for the default 128). Each
/// shard only sees the invalidations that visit it, so fewer buckets refuse about as rarely.
pub(crate) const MIN_SHARD_FENCE_BUCKETS: u64 = 1_024;

/// FNV-1a of `bytes`, mixed with MurmurHash3's finalizer (FNV's low bits alone spread ids
/// that differ in their last digits poorly). Every process and version must agree on fence
/// buckets and shards, so it is spelled out here rather than taken from a hasher whose output
/// may change.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

/// The hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16_384;

/// The most shards a cache may have: each gets its own range of at least 16 slots.
pub(crate) const MAX_SHARDS: u16 = 1_024;

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the bytes between the
/// first `{` and the next `}`, when there are any), else of the whole key.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// `text` with glob's special characters escaped.
fn glob_escape(text: &str) -> String {
    let mut p = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// `<tag pattern>:<kind>:*`, or `<tag pattern>:*` for every kind (`"*"`).
fn pattern(tag_pattern: &str, kind: &str) -> String {
    let mut p = format!("{tag_pattern}:{kind}");
    if kind != "*" {
        p.push_str(":*");
    }
    p
}

/// Where the keys of a cache live: `S` shards, each a [`KeySpace`] with its own hash tag.
///
/// An entry lives in the shard of its key; a dependency's directory in its *home* shard (see
/// `docs/cluster.md`). With one shard the tag is `{<prefix>}`, the layout of a standalone
/// server since the first version. With more, shard `s` gets the tag `{<prefix>#<n>}` with the
/// smallest `n` whose slot falls in the `s`-th of `S` equal slot ranges, so the shards spread
/// evenly over the masters of a cluster whatever the prefix, and every process computes the
/// same tags.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The keys of the prefix as a whole (the tag of a cache of one shard).
    base: KeySpace,
    shards: Vec<KeySpace>,
    /// Each shard's number by its tag.
    by_tag: HashMap<String, usize>,
    /// Each shard's Redis Cluster slot.
    slots: Vec<u16>,
    /// Buckets of each shard's fence table.
    fence_buckets: u64,
}

impl Layout {
    /// The layout of `prefix` over `shards` shards (1 to [`MAX_SHARDS`]).
    pub(crate) fn new(prefix: &str, shards: u16) -> Result<Self> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(Error::InvalidConfig(
                "the number of shards must be between 1 and 1024".into(),
            ));
        }
        let single = KeySpace::new(prefix)?;
        if shards == 1 {
            return Ok(Layout::of(single.clone(), vec![single]));
        }
        let escaped = &single.tag[1..single.tag.len() - 1];
        let width = u32::from(SLOTS);
        let count = u32::from(shards);
        let tags = (0..count)
            .map(|s| {
                let (low, high) = (s * width / count, (s + 1) * width / count);
                (0u64..)
                    .map(|n| format!("{{{escaped}#{n}}}"))
                    .find(|tag| (low..high).contains(&u32::from(slot(tag.as_bytes()))))
                    .map(|tag| KeySpace { tag })
                    .expect("every slot range is reached by some tag")
            })
            .collect();
        Ok(Layout::of(single, tags))
    }

    fn of(base: KeySpace, shards: Vec<KeySpace>) -> Self {
        let by_tag = shards
            .iter()
            .enumerate()
            .map(|(s, keys)| (keys.tag.clone(), s))
            .collect();
        let slots = shards
            .iter()
            .map(|keys| slot(keys.tag.as_bytes()))
            .collect();
        let fence_buckets = match shards.len() {
            1 => FENCE_BUCKETS,
            n => (FENCE_BUCKETS / n as u64).max(MIN_SHARD_FENCE_BUCKETS),
        };
        Layout {
            base,
            shards,
            by_tag,
            slots,
            fence_buckets,
        }
    }

    /// The fence bucket of `dep`, the same in every shard's table. (Every process of a cache
    /// must agree on it: it depends only on the dependency and the number of shards.)
    pub(crate) fn fence_bucket(&self, dep: &Dep) -> u64 {
        stable_hash(dep.as_str().as_bytes()) % self.fence_buckets
    }

    /// The key that records the number of shards of the prefix: the same key whatever the
    /// number, so that processes configured differently find each other out (a shard's tag
    /// is also a tag of other shard counts, with another number).
    pub(crate) fn shard_count_key(&self) -> String {
        format!("{}:n", self.base.tag)
    }

    /// The directory repair's lock: one pass at a time for the whole prefix (see
    /// `repair.rs`). Under the unsharded tag, as [`shard_count_key`](Self::shard_count_key).
    pub(crate) fn repair_lock_key(&self) -> String {
        format!("{}:k", self.base.tag)
    }

    /// The directory repair's progress, in the lock's slot.
    pub(crate) fn repair_progress_key(&self) -> String {
        format!("{}:q", self.base.tag)
    }

    /// The Redis Cluster slot of shard `s`.
    pub(crate) fn slot_of(&self, s: usize) -> u16 {
        self.slots[s]
    }

    /// A `SCAN MATCH` pattern for the keys of one type (`"d"`, `"r"`, or `"*"` for all) in
    /// every shard.
    pub(crate) fn pattern(&self, kind: &str) -> String {
        match self.shards.as_slice() {
            [single] => single.pattern(kind),
            shards => {
                // `{<prefix>#<n>}`: the prefix part of the first tag, then any shard number.
                let tag = &shards[0].tag;
                let base = &tag[..tag.rfind('#').expect("a sharded tag") + 1];
                pattern(&format!("{}*}}", glob_escape(base)), kind)
            }
        }
    }

    /// The shard a Redis key of this cache belongs to, and its type letter (`d`, `r`, ...).
    pub(crate) fn locate<'a>(&self, redis_key: &'a str) -> Option<(usize, &'a str)> {
        let tag = &redis_key[..=redis_key.find('}')?];
        let shard = *self.by_tag.get(tag)?;
        Some((shard, self.shards[shard].kind_of(redis_key)?))
    }

    /// The number of shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    /// The keys of shard `s`.
    pub(crate) fn shard(&self, s: usize) -> &KeySpace {
        &self.shards[s]
    }

    /// Every shard, in order.
    #[cfg(test)]
    pub(crate) fn shards(&self) -> &[KeySpace] {
        &self.shards
    }

    /// The shard that holds the entry under `key`.
    pub(crate) fn shard_of(&self, key: &str) -> usize {
        self.pick(key.as_bytes())
    }

    /// The home shard of `dep`: where its directory lives.
    pub(crate) fn home_of(&self, dep: &Dep) -> usize {
        self.pick(dep.as_str().as_bytes())
    }

    fn pick(&self, bytes: &[u8]) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        // Another hash than the fence bucket's low bits: the shard and the bucket of a
        // dependency must not be correlated. (`as usize` keeps the value: it is < 1024.)
        (stable_hash(bytes).rotate_right(32) % self.shards.len() as u64) as usize
    }
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
                // `#` separates a sharded prefix from its shard number.
                '#' => tag.push_str("%23"),
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

    /// The directory of `dep` in its home shard: a bitmap of the shards that hold dependents
    /// of it (sharded caches: see `docs/cluster.md`).
    pub(crate) fn directory(&self, dep: &Dep) -> String {
        self.key("h", dep.as_str())
    }

    /// Where a directory pruning pass keeps `dep`'s directory while it checks that no shard
    /// holds a dependent any more (see `repair.rs`).
    pub(crate) fn directory_tomb(&self, dep: &Dep) -> String {
        self.key("t", dep.as_str())
    }

    /// The token of the pruning pass that last buried `dep`'s directory into its tombstone:
    /// only that pass may delete the tombstone (see `repair.rs`).
    pub(crate) fn directory_tomb_owner(&self, dep: &Dep) -> String {
        self.key("o", dep.as_str())
    }

    /// The dependency whose directory (`h`) or tombstone (`t`) is `redis_key`.
    pub(crate) fn dep_of_directory(&self, redis_key: &str) -> Option<Dep> {
        let rest = redis_key.strip_prefix(&self.tag)?;
        rest.strip_prefix(":h:")
            .or_else(|| rest.strip_prefix(":t:"))?
            .parse()
            .ok()
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

    /// The ticket floor: fenced puts with an older ticket are refused in this shard (see
    /// `epoch.lua`).
    pub(crate) fn ticket_floor(&self) -> String {
        format!("{}:g", self.tag)
    }

    /// Set while this shard's directories may have lost bits (sharded caches: see
    /// `epoch.lua` and `repair.rs`).
    pub(crate) fn incomplete(&self) -> String {
        format!("{}:i", self.tag)
    }

    /// The directory version: `"<epoch floor>/<n>"`, renewed by a new epoch and by every
    /// directory repair pass; a put that skipped its registrations names the version it
    /// read (sharded caches: see `registrations.rs`).
    pub(crate) fn directory_version(&self) -> String {
        format!("{}:v", self.tag)
    }

    /// A counter written on a connection of its own just before a `WAIT` on it, so that the
    /// `WAIT` covers every write sent to the server before (see `wait_for_replicas`).
    pub(crate) fn wait_probe(&self) -> String {
        format!("{}:w", self.tag)
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
        pattern(&glob_escape(&self.tag), kind)
    }

    /// The dependency whose index is `redis_key`, if it is an index key of this prefix.
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
        let layout = Layout::new("p", 1).unwrap();
        assert_eq!(layout.fence_bucket(&crate::dep::id("article", 1)), 13113);
        assert_eq!(layout.fence_bucket(&crate::dep::tag("")), 1109);
        let mut used = std::collections::HashSet::new();
        for i in 0..10_000 {
            used.insert(layout.fence_bucket(&crate::dep::id("article", i)));
        }
        assert!(
            used.len() > 7_000,
            "{} buckets for 10,000 dependencies",
            used.len()
        );
        // Sharded: smaller tables, at least MIN_SHARD_FENCE_BUCKETS.
        for (shards, buckets) in [(2, 8_192), (16, 1_024), (128, 1_024), (1_024, 1_024)] {
            let layout = Layout::new("p", shards).unwrap();
            let used: std::collections::HashSet<u64> = (0..100_000)
                .map(|i| layout.fence_bucket(&crate::dep::id("article", i)))
                .collect();
            assert!(used.iter().all(|&b| b < buckets), "{shards} shards");
            assert!(used.len() as u64 > buckets * 99 / 100, "{shards} shards");
        }
    }

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Examples from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn one_shard_keeps_the_standalone_layout() {
        let layout = Layout::new("cache", 1).unwrap();
        assert_eq!(layout.shard(0), &KeySpace::new("cache").unwrap());
        assert_eq!(layout.pattern("r"), "{cache}:r:*");
        assert_eq!(layout.locate("{cache}:d:k:1"), Some((0, "d")));
        assert_eq!(layout.locate("{cache#1}:d:k"), None);
        assert_eq!(layout.shard_of("anything"), 0);
        assert!(matches!(
            Layout::new("cache", 0),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Layout::new("cache", 1025),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn shards_spread_evenly_over_the_slots() {
        for (prefix, shards) in [("cache", 128u16), ("a}b{%", 3), ("x", 1024)] {
            let layout = Layout::new(prefix, shards).unwrap();
            assert_eq!(layout.len(), usize::from(shards));
            for (s, keys) in layout.shards().iter().enumerate() {
                let slot = u32::from(slot(keys.sequence().as_bytes()));
                let (s, count) = (s as u32, u32::from(shards));
                assert!(slot >= s * 16_384 / count && slot < (s + 1) * 16_384 / count);
            }
        }
        let layout = Layout::new("a*#", 8).unwrap();
        assert_eq!(layout.pattern("d"), r"{a\*%23#*}:d:*");
        let data = layout.shard(5).data("x}y");
        assert_eq!(layout.locate(&data), Some((5, "d")));
        assert_eq!(layout.locate("{a*%23#99999}:d:x"), None);
        // Pinned: every process and version must compute the same tags.
        let layout = Layout::new("cache", 128).unwrap();
        assert_eq!(layout.shard(0).sequence(), "{cache#352}:s"); // CLUSTER KEYSLOT: 85
        assert_eq!(layout.shard_of("article:1"), 75);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let layout = Layout::new("cache", 64).unwrap();
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[layout.shard_of(&format!("article:{i}:html"))] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1_200, "{min}..{max} keys per shard");
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

//! The directory bits this process knows are set (sharded caches; see `docs/cluster.md`,
//! "Registering once").
//!
//! A put of an entry in shard `s` must be in the directory of each of its dependencies at the
//! dependency's home. Bits are never cleared, so once a put registered `s` for `D`, later
//! plain puts of `D` in `s` need not send the `SETBIT` again: a warm plain put is one script
//! in one slot. (Fenced puts always register: `register.lua` is also their fence check at the
//! home, which an invalidation that read the directory before the bit was set, and still
//! runs, has marked but never visits the put's shard to mark.) A bit can still be lost with its home's epoch (a failover to a replica
//! that missed it, a flush); the repair pass that follows rebuilds bits from the index slices
//! and first renews every shard's *directory version* (`{tag}:v`). A registration remembered
//! here is valid only under the version of `s` read before its `SETBIT` was sent, and
//! `put.lua` refuses a put that names another version than the shard's. So a put that skips
//! its registration either ran before the repair renewed `s` (and the pass then finds its
//! index member), or is refused, forgets what it knew of `s` and registers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::dep::Dep;

/// How many registrations a process remembers (in [`STRIPES`] maps); beyond that an
/// arbitrary one is forgotten and registered again on its next put.
const CAPACITY: usize = 65_536;
const STRIPES: usize = 64;

/// What a put read of its shard's directory version before it registered anything.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// The version as the shard stores it, sent with the put (`""` when never read: the put
    /// is refused and reads it).
    pub(crate) version: String,
    /// This process's number for that reading: registrations made under it.
    stamp: u64,
}

/// One remembered registration: the directory of the dependency whose digest (with
/// `shard`) is its key has the bit of `shard`, set under `stamp`. The digest, not the text:
/// each costs the same whatever the dependency's length.
struct Registered {
    stamp: u64,
}

/// SHA-256 of (shard, dependency): a registration is skipped only for exactly this pair (a
/// collision would skip one that is needed, so the hash must resist chosen texts).
type Digest = [u8; 32];

pub(crate) struct Registrations {
    /// Per shard: its directory version as last read, and the stamp of that reading.
    versions: Vec<Mutex<Seen>>,
    stamps: AtomicU64,
    /// Registrations by their digest, in stripes.
    known: Vec<Mutex<HashMap<Digest, Registered>>>,
}

impl Registrations {
    pub(crate) fn new(shards: usize) -> Self {
        Registrations {
            versions: (0..shards)
                .map(|_| {
                    Mutex::new(Seen {
                        version: String::new(),
                        stamp: 0,
                    })
                })
                .collect(),
            stamps: AtomicU64::new(1),
            known: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }

    /// `shard`'s directory version as this process last read it.
    pub(crate) fn seen(&self, shard: usize) -> Seen {
        self.versions[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `shard`'s directory version as read from the server. Another version than the
    /// one known forgets every registration made in `shard`.
    pub(crate) fn learn(&self, shard: usize, version: &str) {
        let mut seen = self.versions[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.version != version {
            seen.version = version.to_owned();
            seen.stamp = self.stamps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a put in `shard` that read `seen` may skip registering at `dep`'s home.
    pub(crate) fn is_registered(&self, seen: &Seen, shard: usize, dep: &Dep) -> bool {
        if seen.version.is_empty() {
            return false;
        }
        let digest = digest(shard, dep);
        let stripe = self.stripe(&digest);
        stripe
            .get(&digest)
            .is_some_and(|known| known.stamp == seen.stamp)
    }

    /// Remembers that `dep`'s directory has the bit of `shard`, set after `seen` was read,
    /// and that the put's shard still had that version afterwards.
    pub(crate) fn record(&self, seen: &Seen, shard: usize, dep: &Dep) {
        if seen.version.is_empty() {
            return;
        }
        let digest = digest(shard, dep);
        let mut stripe = self.stripe(&digest);
        if stripe.len() >= CAPACITY / STRIPES && !stripe.contains_key(&digest) {
            if let Some(&victim) = stripe.keys().next() {
                stripe.remove(&victim);
            }
        }
        stripe.insert(digest, Registered { stamp: seen.stamp });
    }

    fn stripe(&self, digest: &Digest) -> std::sync::MutexGuard<'_, HashMap<Digest, Registered>> {
        self.known[usize::from(digest[0]) % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a registration is kept (a local hash: collisions are told apart by the stored
/// shard and dependency). No allocation: it runs for every dependency of every put.
fn digest(shard: usize, dep: &Dep) -> Digest {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update((shard as u64).to_be_bytes());
    hasher.update(dep.as_str().as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dep;

    #[test]
    fn registrations_hold_only_under_the_version_they_were_made_in() {
        let r = Registrations::new(4);
        let d = dep::id("article", 1);
        // Never read: nothing is remembered.
        let unread = r.seen(2);
        r.record(&unread, 2, &d);
        assert!(!r.is_registered(&unread, 2, &d));

        r.learn(2, "100/0");
        let seen = r.seen(2);
        assert!(!r.is_registered(&seen, 2, &d));
        r.record(&seen, 2, &d);
        assert!(r.is_registered(&r.seen(2), 2, &d));
        // Another shard, another dependency: not registered.
        r.learn(3, "100/0");
        assert!(!r.is_registered(&r.seen(3), 3, &d));
        assert!(!r.is_registered(&r.seen(2), 2, &dep::id("article", 2)));
        // The same version read again keeps it; a renewed version forgets it.
        r.learn(2, "100/0");
        assert!(r.is_registered(&r.seen(2), 2, &d));
        r.learn(2, "100/1");
        assert!(!r.is_registered(&r.seen(2), 2, &d));
        // A put that read the old version cannot record under the new one.
        r.record(&seen, 2, &d);
        assert!(!r.is_registered(&r.seen(2), 2, &d));
        // Back to an old version text is still a new reading.
        r.learn(2, "100/0");
        assert!(!r.is_registered(&r.seen(2), 2, &d));
    }

    #[test]
    fn memory_is_bounded() {
        let r = Registrations::new(1);
        r.learn(0, "1/0");
        let seen = r.seen(0);
        for i in 0..(CAPACITY as u64 * 2) {
            r.record(&seen, 0, &dep::id("a", i));
        }
        let held: usize = r.known.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= CAPACITY, "{held}");
        assert!(r.is_registered(&seen, 0, &dep::id("a", CAPACITY as u64 * 2 - 1)));
    }
}

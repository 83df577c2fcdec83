//! The Lua scripts, each a `.lua` file beside this one, invoked by SHA (and loaded on a server
//! that answers `NOSCRIPT`: a new or restarted master; see `router.rs`).
//!
//! The scripts that read or write the fence table get `fence.lua` prepended, so the table's
//! format is spelled out once; those that merge directory bitmaps get `bitmaps.lua`; those
//! that read an entry's freshness get `entry.lua`.

use std::sync::LazyLock;

use redis::Script;

/// `source` with `helpers` in front (after a `#!lua` line, which must stay first).
fn with_helpers(helpers: &str, source: &str) -> Script {
    let (shebang, body) = match source.strip_prefix("#!") {
        Some(_) => source.split_once('\n').unwrap_or((source, "")),
        None => ("", source),
    };
    Script::new(&format!("{shebang}\n{helpers}\n{body}"))
}

/// `source` with `fence.lua`'s helpers in front.
fn with_fences(source: &str) -> Script {
    with_helpers(include_str!("fence.lua"), source)
}

/// `source` with `bitmaps.lua`'s helpers in front.
fn with_bitmaps(source: &str) -> Script {
    with_helpers(include_str!("bitmaps.lua"), source)
}

/// Writes an entry and its index members (fenced or not): `put.lua`.
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| with_fences(include_str!("put.lua")));
/// `source` with `entry.lua`'s helpers in front.
fn with_entries(source: &str) -> Script {
    with_helpers(include_str!("entry.lua"), source)
}

/// A ticket and a lease, or the entry if it exists: `begin.lua`.
pub(super) static BEGIN: LazyLock<Script> =
    LazyLock::new(|| with_entries(include_str!("begin.lua")));
/// Whether a fresh entry exists: `has.lua`.
pub(super) static HAS: LazyLock<Script> = LazyLock::new(|| with_entries(include_str!("has.lua")));
/// Gives a lease back: `release.lua`.
pub(super) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("release.lua")));
/// Starts invalidating a chunk of dependencies: `invalidate.lua`.
pub(super) static INVALIDATE: LazyLock<Script> =
    LazyLock::new(|| with_fences(include_str!("invalidate.lua")));
/// Drops a batch of an invalidation, and ends it: `drop.lua`.
pub(super) static DROP: LazyLock<Script> = LazyLock::new(|| with_fences(include_str!("drop.lua")));
/// Starts an invalidation at a dependency's home shard: `home.lua`.
pub(super) static HOME: LazyLock<Script> = LazyLock::new(|| with_fences(include_str!("home.lua")));
/// Registers a fenced put at its dependencies' home shards: `register.lua`.
pub(super) static REGISTER: LazyLock<Script> =
    LazyLock::new(|| with_fences(include_str!("register.lua")));
/// Removes index members whose entries are gone: `prune.lua`.
pub(super) static PRUNE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("prune.lua")));
/// An entry's header and dependency list: `deps.lua`.
pub(super) static DEPS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("deps.lua")));
/// Moves directories to their tombstones while a pruning pass checks them: `bury.lua`.
pub(super) static BURY: LazyLock<Script> = LazyLock::new(|| with_bitmaps(include_str!("bury.lua")));
/// Deletes pruned tombstones, or merges them back: `settle.lua`.
pub(super) static SETTLE: LazyLock<Script> =
    LazyLock::new(|| with_bitmaps(include_str!("settle.lua")));
/// Ends a shard's "directories incomplete" mark after a repair: `repaired.lua`.
pub(super) static REPAIRED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("repaired.lua")));
/// Takes or keeps the repair lock, and records the repair's progress: `repair_progress.lua`.
pub(super) static REPAIR_PROGRESS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("repair_progress.lua")));
/// Ends a repair: its progress and its lock: `repair_end.lua`.
pub(super) static REPAIR_END: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("repair_end.lua")));
/// Renews a shard's directory version before a repair pass: `directory_version.lua`.
pub(super) static DIRECTORY_VERSION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("directory_version.lua")));
/// Sets a shard's ticket floor after a new epoch: `ticket_floor.lua`.
pub(super) static TICKET_FLOOR: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ticket_floor.lua")));
/// The next value of the ticket counter, on a full server too: `mark.lua`.
pub(super) static MARK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("mark.lua")));
/// Sets a shard's bit in directories at one home: `directory_bits.lua`.
pub(super) static DIRECTORY_BITS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("directory_bits.lua")));
/// Takes a shard's prune lock: `prune_lock.lua`.
pub(super) static PRUNE_LOCK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("prune_lock.lua")));
/// Records the prefix's number of shards, or reads the one recorded: `shard_count.lua`.
pub(super) static SHARD_COUNT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("shard_count.lua")));
/// The connection handshake: `epoch.lua`.
pub(super) static EPOCH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("epoch.lua")));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shebang_stays_first() {
        let script = with_fences("#!lua flags=allow-oom\nreturn 1");
        let _ = script; // built without panicking
        let (shebang, _) = include_str!("drop.lua").split_once('\n').unwrap();
        assert_eq!(shebang, "#!lua flags=allow-oom");
    }
}

#!lua flags=allow-oom
-- allow-oom: pruning must work on a full `noeviction` server; it grows nothing.
--
-- Step 1 of pruning directories (sharded caches; see repair.rs and docs/cluster.md): moves
-- each directory to its tombstone, merging into a tombstone another pass, running or
-- stopped half-way, left; the tombstone is this pass's from now on (another pass can no
-- longer delete it: it may hold a bit that pass never checked). Invalidations read both
-- (home.lua); a registration from now on creates a new directory, which the pass never
-- deletes.
--
-- KEYS[3i-2]   the directory of dependency i (a bitmap of shards), at this home shard
-- KEYS[3i-1]   its tombstone
-- KEYS[3i]     the tombstone's owner: the token of the pass that last buried into it
-- ARGV[1]      this pass's token
--
-- Returns each tombstone's bitmap ('' when there is none).
local tombs = {}
for i = 1, #KEYS, 3 do
    local directory, tomb, owner = KEYS[i], KEYS[i + 1], KEYS[i + 2]
    if redis.call('EXISTS', directory) == 1 then
        merge_bitmap(directory, tomb)
    end
    local bits = redis.call('GET', tomb)
    if bits then
        redis.call('SET', owner, ARGV[1])
    end
    tombs[#tombs + 1] = bits or ''
end
return tombs

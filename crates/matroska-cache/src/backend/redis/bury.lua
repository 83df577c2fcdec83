#!lua flags=allow-oom
-- allow-oom: pruning must work on a full `noeviction` server; it grows nothing.
--
-- Step 1 of pruning directories (sharded caches; see repair.rs and docs/cluster.md): moves
-- each directory to its tombstone, merging into a tombstone a pass that stopped half-way
-- left. Invalidations read both (home.lua); a registration from now on creates a new
-- directory, which the pass never deletes.
--
-- KEYS[2i-1]   the directory of dependency i (a bitmap of shards), at this home shard
-- KEYS[2i]     its tombstone
--
-- Returns each tombstone's bitmap ('' when there is none).
local tombs = {}
for i = 1, #KEYS, 2 do
    local directory, tomb = KEYS[i], KEYS[i + 1]
    if redis.call('EXISTS', directory) == 1 then
        merge_bitmap(directory, tomb)
    end
    tombs[#tombs + 1] = redis.call('GET', tomb) or ''
end
return tombs

#!lua flags=allow-oom
-- allow-oom: pruning must work on a full `noeviction` server; it frees memory.
--
-- Step 4 of pruning directories (sharded caches; see repair.rs and docs/cluster.md): deletes
-- each tombstone whose shards were all found without a slice of its dependency after their
-- directory versions were renewed, and merges the others back into their directory.
--
-- KEYS[2i-1]   the directory of dependency i, at this home shard
-- KEYS[2i]     its tombstone
-- ARGV[i]      '1' to delete tombstone i, '0' to merge it back
--
-- Returns how many tombstones were deleted.
local deleted = 0
for i = 1, #ARGV do
    local directory, tomb = KEYS[2 * i - 1], KEYS[2 * i]
    if redis.call('EXISTS', tomb) == 1 then
        if ARGV[i] == '1' then
            deleted = deleted + redis.call('DEL', tomb)
        else
            merge_bitmap(tomb, directory)
        end
    end
end
return deleted

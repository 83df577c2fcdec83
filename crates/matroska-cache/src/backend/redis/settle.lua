#!lua flags=allow-oom
-- allow-oom: pruning must work on a full `noeviction` server; it frees memory.
--
-- Step 4 of pruning directories (sharded caches; see repair.rs and docs/cluster.md): deletes
-- each tombstone whose shards were all found without a slice of its dependency after their
-- directory versions were renewed, if this pass still owns it (a pass that buried into it
-- since may have merged in a bit this pass never checked: that pass settles it), and merges
-- the others back into their directory (always safe: it only adds bits).
--
-- KEYS[3i-2]   the directory of dependency i, at this home shard
-- KEYS[3i-1]   its tombstone
-- KEYS[3i]     the tombstone's owner (see bury.lua)
-- ARGV[1]      this pass's token
-- ARGV[1+i]    '1' to delete tombstone i, '0' to merge it back
--
-- Returns how many tombstones were deleted.
local deleted = 0
for i = 1, #ARGV - 1 do
    local directory, tomb, owner = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    if redis.call('EXISTS', tomb) == 1 then
        if ARGV[1 + i] == '0' then
            merge_bitmap(tomb, directory)
            redis.call('DEL', owner)
        elseif redis.call('GET', owner) == ARGV[1] then
            deleted = deleted + redis.call('DEL', tomb)
            redis.call('DEL', owner)
        end
    end
end
return deleted

#!lua flags=allow-oom
-- allow-oom: invalidation must work on a full `noeviction` server, or stale entries could
-- never be dropped; it frees memory and grows nothing but the fixed-size fence table.
--
-- Starts the invalidation of one chunk of dependencies: takes a mark from the generation
-- counter, records it in the fence table (fence.lua) for each dependency's bucket, and, when
-- their indexes are small, returns their contents in the same atomic step. A chunk without
-- dependents is finished here: one round trip, and nothing is left behind.
--
-- KEYS[1]      the shard's generation counter
-- KEYS[2]      the shard's fence table
-- KEYS[3..]    the index hash (this shard's slice) of each dependency of the chunk
-- ARGV[1]      the largest number of members to return at once
-- ARGV[2]      how long (ms) the invalidation counts as running without a sign of life
-- ARGV[3]      the mark, taken from the cache's ticket counter (sharded caches), or '' to
--              take it from KEYS[1] (one shard: the ticket counter is KEYS[1])
-- ARGV[4]      the invalidation's token (see fence.lua)
-- ARGV[5..]    the fence bucket of each dependency, in the order of KEYS[3..]
--
-- Returns {snapshot, sizes, lists, running}: snapshot is a generation of this shard above
-- every member written before this script (members written after it belong to later puts
-- and are left alone); sizes holds each index's member count; lists holds one flat HGETALL
-- reply per index, or is nil when the indexes hold more than ARGV[1] members together (the
-- caller then walks them with HSCAN); running is 1 if the caller must finish the
-- invalidation with drop.lua, 0 if it is finished here.
local snapshot = redis.call('INCR', KEYS[1])
local mark = snapshot
if ARGV[3] ~= '' then
    mark = tonumber(ARGV[3])
end
local now = now_ms()
local sizes, total = {}, 0
for i = 3, #KEYS do
    local n = redis.call('HLEN', KEYS[i])
    sizes[#sizes + 1] = n
    total = total + n
end
local running = total > 0 and 1 or 0
local buckets = distinct(5, #KEYS - 2)
local states = fence_get(KEYS[2], buckets, now)
for _, state in ipairs(states) do
    -- The highest mark wins: marks of concurrent invalidations arrive in any order.
    state[1] = math.max(state[1], mark)
    if running == 1 then
        fence_start(state, ARGV[4], now + tonumber(ARGV[2]))
    end
end
fence_set(KEYS[2], buckets, states)
if total > tonumber(ARGV[1]) then
    return {snapshot, sizes, false, running}
end
local lists = {}
for i = 3, #KEYS do
    if sizes[i - 2] > 0 then
        lists[#lists + 1] = redis.call('HGETALL', KEYS[i])
    else
        lists[#lists + 1] = {}
    end
end
return {snapshot, sizes, lists, running}

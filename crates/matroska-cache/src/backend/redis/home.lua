#!lua flags=allow-oom
-- allow-oom: invalidation must work on a full `noeviction` server; it grows nothing but the
-- fixed-size fence table.
--
-- Starts the invalidation of a chunk of dependencies at their home shard (sharded caches
-- only; see docs/cluster.md): marks each dependency's fence bucket with the invalidation's
-- mark and counts it running, and returns each dependency's directory, atomically. A fenced
-- put that registers at this home after this script sees the mark and is refused; one that
-- registered before is in the directory, so the invalidation visits its shard.
--
-- KEYS[1]      the home shard's "directories incomplete" mark (see epoch.lua)
-- KEYS[2]      the home shard's fence table
-- KEYS[3..2+n] the directory of each dependency (a bitmap of shards)
-- KEYS[3+n..]  the tombstone of each dependency's directory, in the same order (a directory
--              being pruned: see repair.rs)
-- ARGV[1]      the mark (from the cache's ticket counter)
-- ARGV[2]      how long (ms) the invalidation counts as running without a sign of life
-- ARGV[3]      the invalidation's token (see fence.lua)
-- ARGV[4..]    the fence bucket of each dependency, in the order of KEYS[3..2+n]
--
-- Returns {incomplete, directories, tombstones, running}: incomplete is 1 when this shard's
-- directories may have lost bits (a new epoch, until a repair: the caller then visits every
-- shard); directories and tombstones hold one bitmap per dependency (an empty string when
-- there is none: the shards to visit are the bits of either); running is 0
-- when no shard may hold a dependent (complete directories, all empty): the mark is then
-- final and the invalidation is finished here, else 1: it runs here, kept alive and ended
-- with drop.lua (no members).
local mark = tonumber(ARGV[1])
local now = now_ms()
local incomplete = redis.call('EXISTS', KEYS[1])
local n = (#KEYS - 2) / 2
local directories, tombstones, running = {}, {}, incomplete
for i = 1, n do
    directories[i] = redis.call('GET', KEYS[2 + i]) or ''
    tombstones[i] = redis.call('GET', KEYS[2 + n + i]) or ''
    if directories[i] ~= '' or tombstones[i] ~= '' then
        running = 1
    end
end
local buckets = distinct(4, n)
local states = fence_get(KEYS[2], buckets, now)
for _, state in ipairs(states) do
    state[1] = math.max(state[1], mark)
    if running == 1 then
        fence_start(state, ARGV[3], now + tonumber(ARGV[2]))
    end
end
fence_set(KEYS[2], buckets, states)
return {incomplete, directories, tombstones, running}

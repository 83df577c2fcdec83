#!lua flags=allow-oom
-- allow-oom: it frees memory.
--
-- Drops a batch of entries found in dependency indexes, atomically; with ARGV[2] = 1 it also
-- ends the invalidation of the chunk (see fence.lua), else it is its sign of life.
--
-- KEYS[1]        the shard's generation counter
-- KEYS[2]        the shard's fence table
-- KEYS[3..n+2]   the index hashes the members come from (n = ARGV[1]): only those this
--                batch touches
-- KEYS[n+3..]    one entry per member
-- ARGV[1]        n
-- ARGV[2]        1 if this is the last batch of the chunk, else 0
-- ARGV[3]        how long (ms) the invalidation counts as running from now
-- ARGV[4]        the final mark, taken from the cache's ticket counter after every shard
--                dropped its dependents (sharded caches), or '' to take it from KEYS[1]
-- ARGV[5]        the invalidation's token (see fence.lua)
-- ARGV[6]        b, the number of the chunk's fence buckets
-- ARGV[7..6+b]   the chunk's fence buckets
-- ARGV[7+b..]    one triple per member: index position (1..n), cache key, generation as
--                the entry starts with it (20 digits)
--
-- Without members (n = 0) it is a heartbeat, or a sharded cache's end of the invalidation
-- at a shard (a dependency's home or a shard visited).
--
-- An entry is dropped only if it still holds the generation its index member names: an entry
-- re-cached (put again) since the member was read is a newer value and stays. The member is
-- removed only if it still names that generation, for the same reason. Returns {dropped,
-- lapsed}: the number of entries dropped (an entry reached through several dependencies
-- counts once), and 1 if the invalidation had stopped counting as running here before this
-- sign of life or end (its deadline passed: see invalidate.rs), else 0.
--
-- One read per member, then bulk deletes: an entry that still holds the generation was put
-- by the put that wrote the member, and only a later put of the same key rewrites that
-- member, so the member can go without a second read. Only members of entries that are gone
-- or replaced are read back from their index (in one HMGET per index) before removal.
local n = tonumber(ARGV[1])
local b = tonumber(ARGV[6])
local doomed = {}
local settled, unsure, unsure_gens = {}, {}, {}
for i = 1, n do
    settled[i], unsure[i], unsure_gens[i] = {}, {}, {}
end
for m = 1, #KEYS - n - 2 do
    local a = 7 + b + (m - 1) * 3
    local position = tonumber(ARGV[a])
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    local entry = KEYS[n + 2 + m]
    if redis.call('GETRANGE', entry, 0, 19) == gen then
        doomed[#doomed + 1] = entry
        local fields = settled[position]
        fields[#fields + 1] = field
    else
        local fields = unsure[position]
        fields[#fields + 1] = field
        unsure_gens[position][#fields] = string.match(gen, '^0*(%d+)$') -- as in the index
    end
end

-- unpack() puts every element on Lua's C stack (at most 8000), so bulk calls go in chunks.
local CHUNK = 1000
local function in_chunks(command, key, items)
    local total = 0
    for first = 1, #items, CHUNK do
        local last = math.min(first + CHUNK - 1, #items)
        if key then
            total = total + redis.call(command, key, unpack(items, first, last))
        else
            total = total + redis.call(command, unpack(items, first, last))
        end
    end
    return total
end

-- UNLINK counts each key once, even when several indexes led to it.
local dropped = in_chunks('UNLINK', nil, doomed)
for i = 1, n do
    local index = KEYS[2 + i]
    in_chunks('HDEL', index, settled[i])
    local fields, gens = unsure[i], unsure_gens[i]
    local stale = {}
    for first = 1, #fields, CHUNK do
        local last = math.min(first + CHUNK - 1, #fields)
        local current = redis.call('HMGET', index, unpack(fields, first, last))
        for j = first, last do
            if current[j - first + 1] == gens[j] then
                stale[#stale + 1] = fields[j]
            end
        end
    end
    in_chunks('HDEL', index, stale)
end

local now = now_ms()
local finish = ARGV[2] == '1'
-- Tickets taken before the end are refused from now on; tickets taken after it read data
-- newer than everything this invalidation dropped.
local last = nil
if finish then
    last = ARGV[4] ~= '' and tonumber(ARGV[4]) or redis.call('INCR', KEYS[1])
end
local buckets = distinct(7, b)
local states = fence_get(KEYS[2], buckets, now)
local lapsed = 0
for _, state in ipairs(states) do
    local alive
    if finish then
        alive = fence_end(state, ARGV[5], last)
    else
        alive = fence_alive(state, ARGV[5], now + tonumber(ARGV[3]))
    end
    if not alive then
        lapsed = 1
    end
end
fence_set(KEYS[2], buckets, states)
return {dropped, lapsed}

#!lua flags=allow-oom
-- allow-oom: it frees memory.
--
-- Drops a batch of entries found in dependency indexes, atomically; with ARGV[2] = 1 it also
-- ends the invalidation.
--
-- KEYS[1]        the prefix's generation counter
-- KEYS[2..n+1]   the index hashes the members come from (n = ARGV[1])
-- KEYS[n+2..]    one entry per member
-- ARGV[1]        n
-- ARGV[2]        1 if this is the last batch of the invalidation, else 0
-- ARGV[3]        how long (ms) the invalidation counts as running from now (a sign of life)
-- ARGV[4..]      one triple per member: index position (1..n), cache key, generation as
--                the entry starts with it (20 digits)
--
-- An entry is dropped only if it still holds the generation its index member names: an entry
-- re-cached (put again) since the member was read is a newer value and stays. The member is
-- removed only if it still names that generation, for the same reason. Returns the number of
-- entries dropped, so an entry reached through several dependencies counts once.
--
-- One read per member, then bulk deletes: an entry that still holds the generation was put
-- by the put that wrote the member, and only a later put of the same key rewrites that
-- member, so the member can go without a second read. Only members of entries that are gone
-- or replaced are read back from their index (in one HMGET per index) before removal.
local n = tonumber(ARGV[1])
local doomed = {}
local settled, unsure, unsure_gens = {}, {}, {}
for i = 1, n do
    settled[i], unsure[i], unsure_gens[i] = {}, {}, {}
end
for m = 1, #KEYS - n - 1 do
    local a = 4 + (m - 1) * 3
    local position = tonumber(ARGV[a])
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    local entry = KEYS[n + 1 + m]
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
    local index = KEYS[1 + i]
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

-- The running state of each index (see invalidate.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local finish = ARGV[2] == '1'
local last = finish and redis.call('INCR', KEYS[1])
for i = 2, n + 1 do
    local running, deadline = 0, 0
    local state = redis.call('HGET', KEYS[i], '\254')
    if state then
        local r, d = string.match(state, '^(%d+) (%d+)$')
        running, deadline = tonumber(r), tonumber(d)
    end
    if finish then
        -- Tickets taken before this point are refused from now on; tickets taken after it
        -- read data newer than everything this invalidation dropped.
        running = math.max(running - 1, 0)
        redis.call('HSET', KEYS[i], '\255', last, '\253', now)
    else
        deadline = math.max(deadline, now + tonumber(ARGV[3]))
    end
    if running > 0 then
        redis.call('HSET', KEYS[i], '\254', running .. ' ' .. deadline)
    else
        redis.call('HDEL', KEYS[i], '\254')
    end
end
return dropped

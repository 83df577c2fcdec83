#!lua flags=allow-oom
-- allow-oom: it only frees memory.
--
-- Removes index members whose entry is gone or holds another generation (expired, evicted,
-- deleted, replaced or invalidated through another dependency), and each index that is left
-- with no member and invalidation marks older than any usable ticket.
--
-- KEYS[1..n]   index hashes (n = ARGV[1])
-- KEYS[n+1..]  one entry per member
-- ARGV[1]      n
-- ARGV[2]      the maximum ticket age (ms)
-- ARGV[3..]    one triple per member: index position (1..n), cache key, generation as
--              the entry starts with it (20 digits)
--
-- Returns the number of members removed.
local n = tonumber(ARGV[1])
local removed = 0
for m = 1, #KEYS - n do
    local a = 3 + (m - 1) * 3
    local index = KEYS[tonumber(ARGV[a])]
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    -- The index holds the generation without the entry's leading zeros.
    if redis.call('GETRANGE', KEYS[n + m], 0, 19) ~= gen
        and redis.call('HGET', index, field) == string.match(gen, '^0*(%d+)$') then
        redis.call('HDEL', index, field)
        removed = removed + 1
    end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
    -- The marks invalidate.lua and drop.lua keep (see there).
    local marks = redis.call('HMGET', KEYS[i], '\255', '\254', '\253')
    local count = 0
    for _, v in ipairs({marks[1], marks[2], marks[3]}) do
        if v then count = count + 1 end
    end
    if count > 0 and redis.call('HLEN', KEYS[i]) == count then
        local running = false
        if marks[2] then
            local _, d = string.match(marks[2], '^(%d+) (%d+)$')
            running = tonumber(d) > now
        end
        if not running and now - tonumber(marks[3] or '0') > tonumber(ARGV[2]) then
            redis.call('DEL', KEYS[i])
        end
    end
end
return removed

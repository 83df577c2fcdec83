#!lua flags=allow-oom
-- allow-oom: it only frees memory.
--
-- Removes index members whose entry is gone or holds another generation (expired, evicted,
-- deleted, replaced or invalidated through another dependency). An index left without
-- members disappears with its last one.
--
-- KEYS[1..n]   index hashes (n = ARGV[1])
-- KEYS[n+1..]  one entry per member
-- ARGV[1]      n
-- ARGV[2..]    one triple per member: index position (1..n), cache key, generation as
--              the entry starts with it (20 digits)
--
-- Returns the number of members removed.
local n = tonumber(ARGV[1])
local removed = 0
for m = 1, #KEYS - n do
    local a = 2 + (m - 1) * 3
    local index = KEYS[tonumber(ARGV[a])]
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    -- The index holds the generation without the entry's leading zeros.
    if redis.call('GETRANGE', KEYS[n + m], 0, 19) ~= gen
        and redis.call('HGET', index, field) == string.match(gen, '^0*(%d+)$') then
        redis.call('HDEL', index, field)
        removed = removed + 1
    end
end
for i = 1, n do
    -- Versions before 0.2 kept invalidation marks in the index under three non-UTF-8
    -- fields; the fence table holds them now.
    redis.call('HDEL', KEYS[i], '\255', '\254', '\253')
end
return removed

#!lua flags=allow-oom
-- allow-oom: it only frees memory.
-- Drops a batch of entries found in dependency indexes, atomically.
--
-- KEYS[1..n]   the index hashes the members come from (n = ARGV[1])
-- KEYS[n+1..]  one entry hash per member
-- ARGV[1]      n
-- ARGV[2..]    one triple per member: index position (1..n), cache key, generation
--
-- An entry is dropped only if it still holds the generation its index member names: an entry
-- re-cached (put again) since the member was read is a newer value and stays. The member is
-- removed only if it still names that generation, for the same reason. Returns the number of
-- entries dropped, so an entry reached through several dependencies counts once.
local n = tonumber(ARGV[1])
local dropped = 0
for m = 1, #KEYS - n do
    local a = 2 + (m - 1) * 3
    local index = KEYS[tonumber(ARGV[a])]
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    local entry = KEYS[n + m]
    if redis.call('HGET', entry, 'g') == gen then
        redis.call('UNLINK', entry)
        dropped = dropped + 1
    end
    if redis.call('HGET', index, field) == gen then
        redis.call('HDEL', index, field)
    end
end
return dropped

#!lua flags=allow-oom
-- allow-oom: it only frees memory.
-- Removes index members whose entry is gone or holds another generation (expired, evicted,
-- deleted, replaced or invalidated through another dependency).
--
-- KEYS[1]      one index hash
-- KEYS[2..]    one entry hash per member
-- ARGV         one pair per member: cache key, generation
--
-- Returns the number of members removed. A hash whose last member goes is deleted by Redis.
local removed = 0
for m = 2, #KEYS do
    local field, gen = ARGV[(m - 2) * 2 + 1], ARGV[(m - 2) * 2 + 2]
    if redis.call('HGET', KEYS[m], 'g') ~= gen and redis.call('HGET', KEYS[1], field) == gen then
        redis.call('HDEL', KEYS[1], field)
        removed = removed + 1
    end
end
return removed

#!lua flags=allow-oom
-- allow-oom: it only frees memory.
--
-- Removes index members whose entry is gone or holds another generation (expired, evicted,
-- deleted, replaced or invalidated through another dependency), and the index itself once it
-- holds no member and its invalidation marks are older than any usable ticket.
--
-- KEYS[1]      one index hash
-- KEYS[2..]    one entry hash per member
-- ARGV[1]      the maximum ticket age (ms)
-- ARGV[2..]    one pair per member: cache key, generation
--
-- Returns the number of members removed.
local removed = 0
for m = 2, #KEYS do
    local field, gen = ARGV[(m - 2) * 2 + 2], ARGV[(m - 2) * 2 + 3]
    if redis.call('HGET', KEYS[m], 'g') ~= gen and redis.call('HGET', KEYS[1], field) == gen then
        redis.call('HDEL', KEYS[1], field)
        removed = removed + 1
    end
end
local marks = redis.call('HMGET', KEYS[1], '\255', '\254', '\253')
local count = 0
for _, v in ipairs({marks[1], marks[2], marks[3]}) do
    if v then count = count + 1 end
end
if count > 0 and redis.call('HLEN', KEYS[1]) == count then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local running = false
    if marks[2] then
        local _, d = string.match(marks[2], '^(%d+) (%d+)$')
        running = tonumber(d) > now
    end
    if not running and now - tonumber(marks[3] or '0') > tonumber(ARGV[1]) then
        redis.call('DEL', KEYS[1])
    end
end
return removed

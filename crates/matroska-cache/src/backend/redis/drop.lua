#!lua flags=allow-oom
-- allow-oom: it frees memory.
--
-- Drops a batch of entries found in dependency indexes, atomically; with ARGV[2] = 1 it also
-- ends the invalidation.
--
-- KEYS[1]        the prefix's generation counter
-- KEYS[2..n+1]   the index hashes the members come from (n = ARGV[1])
-- KEYS[n+2..]    one entry hash per member
-- ARGV[1]        n
-- ARGV[2]        1 if this is the last batch of the invalidation, else 0
-- ARGV[3]        how long (ms) the invalidation counts as running from now (a sign of life)
-- ARGV[4..]      one triple per member: index position (1..n), cache key, generation
--
-- An entry is dropped only if it still holds the generation its index member names: an entry
-- re-cached (put again) since the member was read is a newer value and stays. The member is
-- removed only if it still names that generation, for the same reason. Returns the number of
-- entries dropped, so an entry reached through several dependencies counts once.
local n = tonumber(ARGV[1])
local dropped = 0
for m = 1, #KEYS - n - 1 do
    local a = 4 + (m - 1) * 3
    local index = KEYS[1 + tonumber(ARGV[a])]
    local field, gen = ARGV[a + 1], ARGV[a + 2]
    local entry = KEYS[n + 1 + m]
    if redis.call('HGET', entry, 'g') == gen then
        redis.call('UNLINK', entry)
        dropped = dropped + 1
    end
    if redis.call('HGET', index, field) == gen then
        redis.call('HDEL', index, field)
    end
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

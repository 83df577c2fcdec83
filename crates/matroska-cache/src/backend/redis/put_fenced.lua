-- Stores one entry like put.lua, but only if none of its dependencies was invalidated after
-- the ticket was taken, nor is being invalidated now (the "stale set" of a value computed
-- from data older than an invalidation). Releases the caller's lease in the same step.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the entry hash
-- KEYS[3]      the key's lease
-- KEYS[4]      the prefix's epoch
-- KEYS[5..]    the index hash of each dependency
-- ARGV[1..5]   as put.lua: cache key, TTL ms, format tag, value, dependencies (JSON)
-- ARGV[6]      the ticket's generation
-- ARGV[7]      the ticket's time (ms)
-- ARGV[8]      the maximum ticket age (ms)
-- ARGV[9]      the lease holder's token, or ''
-- ARGV[10]     the ticket's epoch
--
-- Returns 1 if stored, 0 if a dependency was invalidated, -1 if the ticket is too old or from
-- an earlier epoch (the prefix's state was lost since, marks included).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[9] ~= '' and redis.call('GET', KEYS[3]) == ARGV[9] then
    redis.call('DEL', KEYS[3])
end
if now - tonumber(ARGV[7]) > tonumber(ARGV[8]) or redis.call('GET', KEYS[4]) ~= ARGV[10] then
    return -1
end
local ticket = tonumber(ARGV[6])
for i = 5, #KEYS do
    local marks = redis.call('HMGET', KEYS[i], '\255', '\254')
    if marks[1] and tonumber(marks[1]) > ticket then
        return 0
    end
    if marks[2] then
        local running, deadline = string.match(marks[2], '^(%d+) (%d+)$')
        if tonumber(running) > 0 and tonumber(deadline) > now then
            return 0
        end
    end
end
local gen = string.format('%d', redis.call('INCR', KEYS[1]))
redis.call('HSET', KEYS[2], 'v', ARGV[4], 'f', ARGV[3], 'g', gen, 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
for i = 5, #KEYS do
    redis.call('HSET', KEYS[i], ARGV[1], gen)
end
return 1

-- Stores one entry and registers it in the index of each of its dependencies, atomically:
-- there is no instant where the entry exists without its index members or the reverse.
-- With a ticket (ARGV[6] not empty) it is a *fenced* put: it stores only if none of the
-- dependencies was invalidated after the ticket was taken, nor is being invalidated now (the
-- "stale set" of a value computed from data older than an invalidation), and it releases the
-- caller's lease in the same step.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the entry hash
-- KEYS[3]      the key's lease
-- KEYS[4]      the prefix's epoch
-- KEYS[5..]    the index hash of each dependency
-- ARGV[1]      the cache key (the member name in each index)
-- ARGV[2]      TTL in milliseconds
-- ARGV[3]      format tag
-- ARGV[4]      value
-- ARGV[5]      the dependencies' texts as a JSON list (read by `deps` and by operators)
-- ARGV[6]      the ticket's generation, or '' for a plain put
-- ARGV[7]      the ticket's time (ms)
-- ARGV[8]      the maximum ticket age (ms)
-- ARGV[9]      the lease holder's token, or ''
-- ARGV[10]     the ticket's epoch
--
-- Returns 1 if stored, 0 if a dependency was invalidated, -1 if the ticket is too old or from
-- an earlier epoch (the prefix's state was lost since, marks included).
--
-- Members the previous entry left in other indexes are not removed here (their keys are not
-- known without a read first): they name the old generation, so no invalidation or prune ever
-- acts on them for the new entry, and invalidation and prune reclaim them.
-- Index hashes have no TTL: under a volatile-* maxmemory policy only entries are evicted.
if ARGV[6] ~= '' then
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
        -- The marks invalidate.lua and drop.lua keep in each index.
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
end
local gen = string.format('%d', redis.call('INCR', KEYS[1]))
redis.call('HSET', KEYS[2], 'v', ARGV[4], 'f', ARGV[3], 'g', gen, 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
for i = 5, #KEYS do
    redis.call('HSET', KEYS[i], ARGV[1], gen)
end
return 1

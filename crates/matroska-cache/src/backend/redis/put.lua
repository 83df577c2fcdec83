-- Stores one entry and registers it in the index of each of its dependencies, atomically:
-- there is no instant where the entry exists without its index members or the reverse.
-- With a ticket (ARGV[5] not empty) it is a *fenced* put: it stores only if none of the
-- dependencies was invalidated after the ticket was taken, nor is being invalidated now (the
-- "stale set" of a value computed from data older than an invalidation; see fence.lua), and
-- it releases the caller's lease in the same step.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the prefix's epoch (see epoch.lua)
-- KEYS[3]      the entry (a string: see entry.rs)
-- KEYS[4]      the prefix's fence table (see invalidate.lua)
-- KEYS[5..]    the index hash of each dependency, then, only for a fenced put:
-- KEYS[#KEYS]  the key's lease
-- ARGV[1]      the cache key (the member name in each index)
-- ARGV[2]      TTL in milliseconds
-- ARGV[3]      the entry after its generation: format tag, dependency list, value
-- ARGV[4]      the epoch floor of the caller's connection
-- ARGV[5..9]   only for a fenced put (else ARGV[5] is ''):
-- ARGV[5]      the ticket's generation
-- ARGV[6]      the ticket's time (ms)
-- ARGV[7]      the maximum ticket age (ms)
-- ARGV[8]      the lease holder's token, or ''
-- ARGV[9]      the ticket's epoch floor
-- ARGV[10..]   the fence bucket of each dependency
--
-- Returns 1 if stored, 0 if a dependency was invalidated, -1 if the ticket is too old or from
-- an earlier epoch (the prefix's state was lost since, marks included). Fails with EPOCH if
-- the caller's connection handshook another epoch (the prefix was flushed): the caller
-- reconnects and retries, and the counter is never used below the floor.
--
-- Members the previous entry left in other indexes are not removed here (their keys are not
-- known without a read first): they name the old generation, so no invalidation or prune ever
-- acts on them for the new entry, and invalidation and prune reclaim them.
-- Index hashes have no TTL: under a volatile-* maxmemory policy only entries are evicted.
local epoch = redis.call('GET', KEYS[2])
local floor = epoch and string.match(epoch, '^(%d+) ')
if floor ~= ARGV[4] then
    return redis.error_reply('EPOCH the prefix is in another epoch; reconnect')
end
local fenced = ARGV[5] ~= ''
local last = #KEYS -- the last index
if fenced then
    last = #KEYS - 1
    local lease = KEYS[#KEYS]
    local now = now_ms()
    if ARGV[8] ~= '' and redis.call('GET', lease) == ARGV[8] then
        redis.call('DEL', lease)
    end
    if now - tonumber(ARGV[6]) > tonumber(ARGV[7]) or ARGV[9] ~= floor then
        return -1
    end
    if #ARGV >= 10 then
        local ticket = tonumber(ARGV[5])
        for _, state in ipairs(fence_get(KEYS[4], distinct(10, #ARGV - 9), now)) do
            if state[1] > ticket or state[2] > 0 then
                return 0
            end
        end
    end
end
local gen = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], string.format('%020d', gen) .. ARGV[3], 'PX', ARGV[2])
gen = string.format('%d', gen)
for i = 5, last do
    redis.call('HSET', KEYS[i], ARGV[1], gen)
end
return 1

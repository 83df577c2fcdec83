-- Stores one entry and registers it in its shard's slice of the index of each of its
-- dependencies, atomically: there is no instant where the entry exists without its index
-- members or the reverse. With a ticket (ARGV[8] not empty) it is a *fenced* put: it stores
-- only if none of the dependencies was invalidated after the ticket was taken, nor is being
-- invalidated now (the "stale set" of a value computed from data older than an
-- invalidation; see fence.lua), and it releases the caller's lease in the same step.
--
-- KEYS[1]      the shard's generation counter
-- KEYS[2]      the shard's epoch (see epoch.lua)
-- KEYS[3]      the entry (a string: see entry.rs)
-- KEYS[4]      the shard's fence table (see fence.lua)
-- KEYS[5]      the key's lease
-- KEYS[6]      the shard's ticket floor (see epoch.lua)
-- KEYS[7]      the shard's directory version (sharded caches: see registrations.rs)
-- KEYS[8..7+n] this shard's index hash of each dependency (n = ARGV[5])
-- KEYS[8+n..]  the directory of each dependency whose home is this shard (sharded caches:
--              see docs/cluster.md)
-- ARGV[1]      the cache key (the member name in each index)
-- ARGV[2]      TTL in milliseconds
-- ARGV[3]      the entry after its generation: format tag, dependency list, value
-- ARGV[4]      the shard's epoch floor on the caller's connection
-- ARGV[5]      n
-- ARGV[6]      this shard's number, set in the directories
-- ARGV[7]      the shard's directory version the caller read before it registered the
--              put at its dependencies' other homes ('' for a cache of one shard)
-- ARGV[8..11]  only for a fenced put (else ARGV[8] is ''):
-- ARGV[8]      the ticket (a value of the cache's ticket counter)
-- ARGV[9]      the ticket's time (ms)
-- ARGV[10]     the maximum ticket age (ms)
-- ARGV[11]     the lease holder's token, or ''
-- ARGV[12..]   the fence bucket of each dependency
--
-- Returns 1 if stored, 0 if a dependency was invalidated, -1 if the ticket is too old or
-- older than the shard's ticket floor (the shard's state, marks included, was lost since it
-- was taken), -2 if the directory version changed since the caller read it (nothing is
-- done: the caller reads it again, registers every dependency and retries). Fails with EPOCH if
-- the caller's connection handshook another epoch (the shard was flushed): the caller
-- handshakes again and retries, and the counter is never used below the floor.
--
-- Members the previous entry left in other indexes are not removed here (their keys are not
-- known without a read first): they name the old generation, so no invalidation or prune ever
-- acts on them for the new entry, and invalidation and prune reclaim them.
-- Index hashes have no TTL: under a volatile-* maxmemory policy only entries are evicted.
local epoch = redis.call('GET', KEYS[2])
local floor = epoch and string.match(epoch, '^(%d+) ')
if floor ~= ARGV[4] then
    return redis.error_reply('EPOCH the shard is in another epoch; reconnect')
end
if ARGV[7] ~= '' and redis.call('GET', KEYS[7]) ~= ARGV[7] then
    return -2
end
local n = tonumber(ARGV[5])
if ARGV[8] ~= '' then
    local now = now_ms()
    if ARGV[11] ~= '' and redis.call('GET', KEYS[5]) == ARGV[11] then
        redis.call('DEL', KEYS[5])
    end
    local ticket_floor = tonumber(redis.call('GET', KEYS[6]) or '')
    if now - tonumber(ARGV[9]) > tonumber(ARGV[10]) or not ticket_floor
        or tonumber(ARGV[8]) < ticket_floor then
        return -1
    end
    if #ARGV >= 12 then
        local ticket = tonumber(ARGV[8])
        for _, state in ipairs(fence_get(KEYS[4], distinct(12, #ARGV - 11), now)) do
            if state[1] > ticket or fence_running(state) then
                return 0
            end
        end
    end
end
for i = 8 + n, #KEYS do
    redis.call('SETBIT', KEYS[i], ARGV[6], 1)
end
local gen = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], string.format('%020d', gen) .. ARGV[3], 'PX', ARGV[2])
gen = string.format('%d', gen)
for i = 8, 7 + n do
    redis.call('HSET', KEYS[i], ARGV[1], gen)
end
return 1

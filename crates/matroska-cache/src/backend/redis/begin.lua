-- Begins a read-through computation: a ticket (the current generation and the server time)
-- and, if asked, the lease on the key, unless the key is cached by now.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the key's lease
-- KEYS[3]      the prefix's epoch
-- KEYS[4]      the entry
-- ARGV[1]      the lease holder's token, or '' for no lease
-- ARGV[2]      the lease's duration (ms)
-- ARGV[3]      a random epoch, used if the prefix has none yet (first use, or state lost)
--
-- Returns {generation, time ms, lease, epoch, entry}: lease is 1 if obtained (or not asked
-- for), 0 if another holder has it, 2 if the entry exists (then it is the fifth element and
-- no lease was taken: the caller has its value without computing).
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[3])
local leased = 1
if ARGV[1] ~= '' then
    -- The winner of a lease re-checks the cache: the previous holder may have stored the
    -- value between this caller's miss and now.
    local entry = redis.call('GET', KEYS[4])
    if entry then
        return {gen, now, 2, epoch, entry}
    end
    -- A lease this holder already has counts as obtained: the same call may run twice when
    -- a reply is lost with its connection and the request is sent again.
    if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
        and redis.call('GET', KEYS[2]) ~= ARGV[1] then
        leased = 0
    end
end
return {gen, now, leased, epoch, false}

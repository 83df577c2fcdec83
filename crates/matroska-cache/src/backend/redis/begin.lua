-- Begins a read-through computation: a ticket (the current generation and the server time)
-- and, if asked, the lease on the key, unless the key is cached by now.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the key's lease
-- KEYS[3]      the prefix's epoch (see epoch.lua)
-- KEYS[4]      the entry
-- ARGV[1]      the lease holder's token, or '' for no lease
-- ARGV[2]      the lease's duration (ms)
-- ARGV[3]      the epoch floor of the caller's connection, 20 digits
-- ARGV[4]      now, in ms since the UNIX epoch, 20 digits
-- ARGV[5]      which entry counts as cached: 0 one still fresh at ARGV[4], 1 one not due for
--              a refresh (entry.lua)
--
-- Returns {generation, time ms, lease, entry}: lease is 1 if obtained (or not asked for), 0
-- if another holder has it, 2 if the entry exists in this epoch and is what the caller
-- wants (then it is the fourth element and no lease was taken: the caller has its value
-- without computing). A stale entry (a fail-safe fallback) or, for a refresh, one due for
-- it counts as absent: the caller takes the lease and computes. Fails with
-- EPOCH if the caller's connection handshook another epoch (the prefix was flushed): the
-- caller reconnects and retries. The ticket's epoch is the caller's floor.
local epoch = redis.call('GET', KEYS[3])
local floor = epoch and string.format('%020d', tonumber(string.match(epoch, '^(%d+) ')))
if floor ~= ARGV[3] then
    return redis.error_reply('EPOCH the prefix is in another epoch; reconnect')
end
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leased = 1
if ARGV[1] ~= '' then
    -- The winner of a lease re-checks the cache: the previous holder may have stored the
    -- value between this caller's miss and now. Entries of an older epoch do not count
    -- (their generation, the first 20 digits, is below the floor).
    local entry = redis.call('GET', KEYS[4])
    if entry and string.sub(entry, 1, 20) >= floor
        and entry_wanted(KEYS[4], tonumber(ARGV[5]), ARGV[4]) then
        return {gen, now, 2, entry}
    end
    -- A lease this holder already has counts as obtained: the same call may run twice when
    -- a reply is lost with its connection and the request is sent again.
    if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
        and redis.call('GET', KEYS[2]) ~= ARGV[1] then
        leased = 0
    end
end
return {gen, now, leased, false}

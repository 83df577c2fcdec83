#!lua flags=allow-oom
-- allow-oom: a repair must run on a full server; two fixed-size keys.
--
-- The coordinated directory repair (see repair.rs): takes or keeps the repair lock for one
-- lease, and records how far the pass got, in one step, only while the caller holds it.
--
-- KEYS[1]      the prefix's repair lock (a token, with a TTL)
-- KEYS[2]      the prefix's repair progress (a hash: `marks`, and a cursor per master)
-- ARGV[1]      the pass's token
-- ARGV[2]      the lease (ms)
-- ARGV[3..]    field, value pairs to record in the progress (none: only take or keep it)
--
-- Returns 1 if the caller holds the lock now (and recorded), 0 if another pass holds it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if #ARGV > 2 then
    redis.call('HSET', KEYS[2], unpack(ARGV, 3))
end
return 1

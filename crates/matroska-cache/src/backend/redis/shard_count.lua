#!lua flags=allow-oom
-- allow-oom: a process must be able to start on a full server; it writes one short key once.
--
-- Records the number of shards of the prefix, unless one is recorded already.
--
-- KEYS[1]      the prefix's shard count (keys.rs: under the unsharded tag)
-- ARGV[1]      the caller's number of shards
--
-- Returns the number recorded (the caller's, or the one found).
local recorded = redis.call('GET', KEYS[1])
if recorded then
    return recorded
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]

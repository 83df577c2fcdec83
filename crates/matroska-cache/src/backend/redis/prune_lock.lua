#!lua flags=allow-oom
-- allow-oom: the background prune frees memory, so it must be able to start on a full server.
--
-- Takes a shard's prune lock for one interval, unless another process holds it.
--
-- KEYS[1]      the shard's prune lock
-- ARGV[1]      the holder
-- ARGV[2]      the interval (ms)
--
-- Returns 1 if taken, else 0.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
return 0

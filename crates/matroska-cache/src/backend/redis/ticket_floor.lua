#!lua flags=allow-oom
-- allow-oom: part of the handshake (see epoch.lua); it writes one fixed-size key.
--
-- Sets a shard's ticket floor after a new epoch began there (sharded caches; see
-- epoch.lua), if the shard is still in that epoch.
--
-- KEYS[1]      the shard's epoch
-- KEYS[2]      the shard's ticket floor
-- ARGV[1]      the floor of the epoch the caller handshook
-- ARGV[2]      a value of the ticket counter read after that epoch began
local epoch = redis.call('GET', KEYS[1])
if epoch and string.match(epoch, '^(%d+) ') == ARGV[1] then
    local current = tonumber(redis.call('GET', KEYS[2]) or '0')
    if tonumber(ARGV[2]) > current then
        redis.call('SET', KEYS[2], ARGV[2])
    end
end
return 0

-- Stores one entry and registers it in the index of each of its dependencies, atomically:
-- there is no instant where the entry exists without its index members or the reverse.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2]      the entry hash
-- KEYS[3..]    the index hash of each dependency
-- ARGV[1]      the cache key (the member name in each index)
-- ARGV[2]      TTL in milliseconds
-- ARGV[3]      format tag
-- ARGV[4]      value
-- ARGV[5]      the dependencies' texts as a JSON list (read by `deps` and by operators)
--
-- Members the previous entry left in other indexes are not removed here (their keys are not
-- known without a read first): they name the old generation, so no invalidation or prune ever
-- acts on them for the new entry, and invalidation and prune reclaim them.
-- Index hashes have no TTL: under a volatile-* maxmemory policy only entries are evicted.
local gen = string.format('%d', redis.call('INCR', KEYS[1]))
redis.call('HSET', KEYS[2], 'v', ARGV[4], 'f', ARGV[3], 'g', gen, 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
for i = 3, #KEYS do
    redis.call('HSET', KEYS[i], ARGV[1], gen)
end
return gen

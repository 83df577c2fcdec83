#!lua flags=allow-oom
-- allow-oom: a registration or a repair grows a directory by a bit at most, and must work on a
-- full server (a repair restores what invalidations need to find every dependent).
--
-- Sets one shard's bit in each directory (sharded caches: see docs/cluster.md), at one home
-- shard: a plain put's registration before it stores, or a repair pass's bits.
--
-- KEYS[i]      the directory of a dependency homed here (a bitmap of shards)
-- ARGV[i]      the shard to set in KEYS[i]
for i = 1, #KEYS do
    redis.call('SETBIT', KEYS[i], ARGV[i], 1)
end
return 0

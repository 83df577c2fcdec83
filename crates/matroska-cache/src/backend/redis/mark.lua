#!lua flags=allow-oom
-- allow-oom: invalidation must work on a full `noeviction` server (a plain INCR is refused
-- there); the counter is one fixed-size key.
--
-- The next value of the cache's ticket counter: an invalidation's mark (sharded caches), or
-- a shard's ticket floor after its new epoch began (see epoch.lua); also the write that
-- comes before a WAIT on a connection of its own (see invalidate.rs).
--
-- KEYS[1]      the ticket counter (shard 0's generation counter), or a shard's WAIT probe
return redis.call('INCR', KEYS[1])

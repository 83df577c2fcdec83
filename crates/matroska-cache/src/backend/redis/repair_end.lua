#!lua flags=allow-oom
-- allow-oom: it only deletes.
--
-- Ends a coordinated directory repair (see repair.rs): deletes its progress and its lock, if
-- the caller still holds it.
--
-- KEYS[1]      the prefix's repair lock
-- KEYS[2]      the prefix's repair progress
-- ARGV[1]      the pass's token
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0

#!lua flags=allow-oom
-- allow-oom: it only deletes.
--
-- Ends a shard's "directories incomplete" mark after a repair pass, unless a newer epoch set
-- it again meanwhile.
--
-- KEYS[1]      the shard's "directories incomplete" mark
-- ARGV[1]      the mark's value when the pass began
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0

-- Gives up a lease if the caller still holds it (it may have expired and been taken by
-- another process meanwhile).
--
-- KEYS[1]      the key's lease
-- ARGV[1]      the holder's token
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
return 0

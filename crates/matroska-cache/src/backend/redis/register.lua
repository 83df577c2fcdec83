#!lua flags=allow-oom
-- allow-oom: registering grows a directory by a bit at most, and a fenced put must be able
-- to be refused on a full server.
--
-- Registers a fenced put's shard in the directories of its dependencies homed here
-- (sharded caches only; see docs/cluster.md), unless one of them was invalidated after the
-- put's ticket was taken or is being invalidated now. Runs before the put itself: an
-- invalidation that starts at this home later visits the put's shard.
--
-- KEYS[1]      the home shard's ticket floor (see epoch.lua)
-- KEYS[2]      the home shard's fence table
-- KEYS[3..]    the directory of each dependency (a bitmap of shards)
-- ARGV[1]      the ticket (a value of the cache's ticket counter)
-- ARGV[2]      the put's shard
-- ARGV[3..]    the fence bucket of each dependency, in the order of KEYS[2..]
--
-- Returns 1 if registered, 0 if refused (nothing is registered then). A ticket older than
-- the home's ticket floor is refused: the home's marks may have been lost since it was taken.
local ticket = tonumber(ARGV[1])
local ticket_floor = tonumber(redis.call('GET', KEYS[1]) or '')
if not ticket_floor or ticket < ticket_floor then
    return 0
end
for _, state in ipairs(fence_get(KEYS[2], distinct(3, #KEYS - 2), now_ms())) do
    if state[1] > ticket or fence_running(state) then
        return 0
    end
end
for i = 3, #KEYS do
    redis.call('SETBIT', KEYS[i], ARGV[2], 1)
end
return 1

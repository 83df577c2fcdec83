#!lua flags=allow-oom
-- allow-oom: invalidation must work on a full `noeviction` server, or stale entries could
-- never be dropped; it frees memory and grows only the counter.
-- Starts an invalidation: takes a mark from the generation counter and, when the indexes are
-- small, their whole contents in the same atomic step.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2..]    the index hash of each dependency
-- ARGV[1]      the largest number of members to return at once
--
-- Returns {mark, lists}: lists holds one flat HGETALL reply per index, or is nil when the
-- indexes hold more than ARGV[1] members (the caller then walks them with HSCAN). Every
-- member written before this script has a generation below the mark; members written after it
-- belong to later puts and are left alone by this invalidation.
local mark = redis.call('INCR', KEYS[1])
local total = 0
for i = 2, #KEYS do
    total = total + redis.call('HLEN', KEYS[i])
end
if total > tonumber(ARGV[1]) then
    return {mark, false}
end
local lists = {}
for i = 2, #KEYS do
    lists[#lists + 1] = redis.call('HGETALL', KEYS[i])
end
return {mark, lists}

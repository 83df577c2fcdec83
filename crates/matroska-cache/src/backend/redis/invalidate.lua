#!lua flags=allow-oom
-- allow-oom: invalidation must work on a full `noeviction` server, or stale entries could
-- never be dropped; it frees memory and grows only the counter and the marks.
--
-- Starts an invalidation: takes a mark from the generation counter, records it in each
-- index for fencing, and, when the indexes are small, returns their whole contents in the
-- same atomic step.
--
-- KEYS[1]      the prefix's generation counter
-- KEYS[2..]    the index hash of each dependency
-- ARGV[1]      the largest number of members to return at once
-- ARGV[2]      how long (ms) this invalidation counts as running without a sign of life
--
-- Each index carries three fields whose names are not UTF-8, so no cache key can clash:
--   \255  the generation at which the last invalidation began or ended (fenced puts with an
--         older ticket are refused)
--   \254  "<running> <deadline ms>": invalidations running now, and until when at most (a
--         crashed invalidation stops counting at its deadline)
--   \253  when \255 was set (ms), so that prune can forget marks no ticket can predate
--
-- Returns {mark, lists}: lists holds one flat HGETALL reply per index, or is nil when the
-- indexes hold more than ARGV[1] members (the caller then walks them with HSCAN). Every
-- member written before this script has a generation below the mark; members written after it
-- belong to later puts and are left alone by this invalidation.
local mark = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = 0
for i = 2, #KEYS do
    local running, deadline = 0, 0
    local state = redis.call('HGET', KEYS[i], '\254')
    if state then
        local r, d = string.match(state, '^(%d+) (%d+)$')
        running, deadline = tonumber(r), tonumber(d)
        if deadline <= now then
            running = 0 -- invalidations that never finished (their client died)
        end
    end
    deadline = math.max(deadline, now + tonumber(ARGV[2]))
    redis.call('HSET', KEYS[i], '\255', mark, '\254', (running + 1) .. ' ' .. deadline, '\253', now)
    total = total + redis.call('HLEN', KEYS[i]) - 3
end
if total > tonumber(ARGV[1]) then
    return {mark, false}
end
local lists = {}
for i = 2, #KEYS do
    lists[#lists + 1] = redis.call('HGETALL', KEYS[i])
end
return {mark, lists}

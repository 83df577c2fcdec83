-- The fence table, shared by put.lua, invalidate.lua and drop.lua (prepended to each when it
-- is loaded: see `scripts.rs`).
--
-- `{prefix}:f` is a hash of at most FENCE_BUCKETS fields. Every dependency hashes to one
-- bucket (keys.rs: fence_bucket), whose field holds "<mark> <running> <deadline>":
--   mark      the generation at which the last invalidation of a dependency in the bucket
--             began or ended: fenced puts with an older ticket are refused
--   running   invalidations of dependencies in the bucket running now (their dependents
--             may still be readable, so a computation may read them even after the mark):
--             fenced puts are refused while it is above zero
--   deadline  when running stops counting (ms): a crashed invalidation blocks puts until
--             then; each batch of a running invalidation pushes it back (a sign of life)
-- Dependencies sharing a bucket only ever make a put be refused needlessly: a miss, never a
-- stale value. The table's size is bounded whatever the number of dependencies.

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The state of `bucket`: mark, running (0 past the deadline), deadline.
local function fence_get(fences, bucket, now)
    local state = redis.call('HGET', fences, bucket)
    if not state then
        return 0, 0, 0
    end
    local mark, running, deadline = string.match(state, '^(%d+) (%d+) (%d+)$')
    mark, running, deadline = tonumber(mark), tonumber(running), tonumber(deadline)
    if deadline <= now then
        running = 0
    end
    return mark, running, deadline
end

-- string.format, not concatenation: Lua prints numbers past 14 digits in exponent notation.
local function fence_set(fences, bucket, mark, running, deadline)
    redis.call('HSET', fences, bucket, string.format('%d %d %d', mark, running, deadline))
end

-- The distinct values of ARGV[first .. first + count - 1].
local function distinct(first, count)
    local out, seen = {}, {}
    for i = first, first + count - 1 do
        if not seen[ARGV[i]] then
            seen[ARGV[i]] = true
            out[#out + 1] = ARGV[i]
        end
    end
    return out
end

-- The fence table, shared by put.lua, invalidate.lua and drop.lua (prepended to each when it
-- is loaded: see `scripts.rs`).
--
-- `{tag}:f` is a hash of a fixed number of fields at most (keys.rs: FENCE_BUCKETS, or fewer
-- per shard of a sharded cache). Every dependency hashes to one bucket
-- (Layout::fence_bucket), whose field holds "<mark> <running> <deadline>":
--   mark      the generation at which the last invalidation of a dependency in the bucket
--             began or ended: fenced puts with an older ticket are refused
--   running   invalidations of dependencies in the bucket running now (their dependents
--             may still be readable, so a computation may read them even after the mark):
--             fenced puts are refused while it is above zero
--   deadline  when running stops counting (ms): a crashed invalidation blocks puts until
--             then; each batch of a running invalidation pushes it back (a sign of life)
-- Dependencies sharing a bucket only ever make a put be refused needlessly: a miss, never a
-- stale value. The table's size is bounded whatever the number of dependencies. Callers
-- pass at most a few hundred buckets at once (unpack() puts them on Lua's C stack).

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The states of `buckets` (one HMGET): a list of {mark, running (0 past the deadline),
-- deadline}, in the same order.
local function fence_get(fences, buckets, now)
    local states = {}
    for i, state in ipairs(redis.call('HMGET', fences, unpack(buckets))) do
        local mark, running, deadline = 0, 0, 0
        if state then
            mark, running, deadline = string.match(state, '^(%d+) (%d+) (%d+)$')
            mark, running, deadline = tonumber(mark), tonumber(running), tonumber(deadline)
            if deadline <= now then
                running = 0
            end
        end
        states[i] = {mark, running, deadline}
    end
    return states
end

-- Writes `states` (as fence_get returns them) for `buckets`, in one HSET. string.format,
-- not concatenation: Lua prints numbers past 14 digits in exponent notation.
local function fence_set(fences, buckets, states)
    local fields = {}
    for i, bucket in ipairs(buckets) do
        local s = states[i]
        fields[#fields + 1] = bucket
        fields[#fields + 1] = string.format('%d %d %d', s[1], s[2], s[3])
    end
    redis.call('HSET', fences, unpack(fields))
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

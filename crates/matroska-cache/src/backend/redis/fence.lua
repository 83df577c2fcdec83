-- The fence table, shared by put.lua, register.lua, invalidate.lua, home.lua and drop.lua
-- (prepended to each when it is loaded: see `scripts.rs`).
--
-- `{tag}:f` is a hash of a fixed number of fields at most (keys.rs: FENCE_BUCKETS, or fewer
-- per shard of a sharded cache). Every dependency hashes to one bucket
-- (Layout::fence_bucket), which has two fields:
--   <bucket>    "<mark> <count> <deadline>"
--     mark      the generation at which the last invalidation of a dependency in the bucket
--               began or ended: fenced puts with an older ticket are refused
--     count     invalidations running now, and deadline when that count stops counting (ms):
--               all that builds before per-invalidation tokens kept, still kept up to date
--               so that such a process on the same prefix (a rolling deploy) sees running
--               invalidations; read here too, for the invalidations such a process runs.
--   <bucket>:r  "<token>:<deadline> ..." the invalidations of a dependency in the bucket
--               running now (their dependents may still be readable, so a computation may
--               read them even after the mark): fenced puts are refused while one is. Each
--               has its own token and deadline: its heartbeat pushes back its deadline only
--               (see invalidate.rs), its end removes its token only, and a crashed
--               invalidation stops counting at its deadline. (A sharded invalidation starting
--               in one shard both as a dependency's home and among its dependents uses two
--               tokens there, each started and ended once.)
-- Dependencies sharing a bucket only ever make a put be refused needlessly: a miss, never a
-- stale value. The table's size is bounded whatever the number of dependencies. Any number
-- of buckets may be passed: the reads and writes below go in chunks (unpack() puts every
-- element on Lua's C stack, which holds about 8,000).

-- redis.call(command, key, ...) over `items` in chunks; the replies, concatenated when they
-- are lists.
local FENCE_CHUNK = 1000
local function fence_chunks(command, key, items)
    local replies = {}
    for first = 1, #items, FENCE_CHUNK do
        local last = math.min(first + FENCE_CHUNK - 1, #items)
        local reply = redis.call(command, key, unpack(items, first, last))
        if type(reply) == 'table' then
            for _, value in ipairs(reply) do
                replies[#replies + 1] = value
            end
        end
    end
    return replies
end

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The states of `buckets` (HMGET), in the same order: {mark, count (0 past its
-- deadline), deadline, runs, listed}, runs holding the deadline of each token still running,
-- listed whether the bucket has a `:r` field.
local function fence_get(fences, buckets, now)
    local fields = {}
    for _, bucket in ipairs(buckets) do
        fields[#fields + 1] = bucket
        fields[#fields + 1] = bucket .. ':r'
    end
    local values = fence_chunks('HMGET', fences, fields)
    local states = {}
    for i = 1, #buckets do
        local state = {0, 0, 0, {}, false}
        local counted, runs = values[2 * i - 1], values[2 * i]
        if counted then
            local mark, count, deadline = string.match(counted, '^(%d+) (%d+) (%d+)$')
            state[1], state[2], state[3] = tonumber(mark), tonumber(count), tonumber(deadline)
            if state[3] <= now then
                state[2] = 0
            end
        end
        if runs then
            state[5] = true
            for token, deadline in string.gmatch(runs, '(%d+):(%d+)') do
                if tonumber(deadline) > now then
                    state[4][token] = tonumber(deadline)
                end
            end
        end
        states[i] = state
    end
    return states
end

-- Whether an invalidation of a dependency in the bucket runs now.
local function fence_running(state)
    return state[2] > 0 or next(state[4]) ~= nil
end

-- Counts the invalidation `token` as running until `deadline`.
local function fence_start(state, token, deadline)
    state[2] = state[2] + 1
    state[3] = math.max(state[3], deadline)
    state[4][token] = deadline
end

-- A sign of life of the invalidation `token`: it runs until `deadline`. Returns false if it
-- had stopped counting (its deadline passed: fenced puts may have been accepted meanwhile),
-- and then it stays stopped.
local function fence_alive(state, token, deadline)
    if not state[4][token] then
        return false
    end
    state[3] = math.max(state[3], deadline)
    state[4][token] = deadline
    return true
end

-- Ends the invalidation `token`: the mark becomes at least `mark`. Returns false if it had
-- stopped counting before (as fence_alive).
local function fence_end(state, token, mark)
    local alive = state[4][token] ~= nil
    state[1] = math.max(state[1], mark)
    state[2] = math.max(state[2] - 1, 0)
    state[4][token] = nil
    return alive
end

-- Writes `states` (as fence_get returns them) for `buckets`: HSET, and HDEL of the
-- `:r` fields no run is left in (the table keeps a field per bucket, and one more only while
-- an invalidation runs). string.format, not concatenation: Lua prints numbers past 14 digits
-- in exponent notation.
local function fence_set(fences, buckets, states)
    local fields, emptied = {}, {}
    for i, bucket in ipairs(buckets) do
        local s = states[i]
        fields[#fields + 1] = bucket
        fields[#fields + 1] = string.format('%d %d %d', s[1], s[2], s[3])
        local runs = {}
        for token, deadline in pairs(s[4]) do
            runs[#runs + 1] = token .. string.format(':%d', deadline)
        end
        if #runs > 0 then
            fields[#fields + 1] = bucket .. ':r'
            fields[#fields + 1] = table.concat(runs, ' ')
        elseif s[5] then
            emptied[#emptied + 1] = bucket .. ':r'
        end
    end
    -- Field-value pairs: an even chunk size keeps each pair in one HSET.
    fence_chunks('HSET', fences, fields)
    fence_chunks('HDEL', fences, emptied)
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

-- The handshake every new connection runs before it serves any command: the prefix's epoch
-- for the server process it reached.
--
-- KEYS[1]      the prefix's epoch: "<floor> <run id>"
-- KEYS[2]      the prefix's generation counter
-- ARGV[1]      the server's run id (INFO server), read on this same connection
--
-- A server that restarted (a crash, a failover, a reload of an older snapshot or AOF) has a
-- new run id. Its data may be older than invalidations that had already returned, so a new
-- epoch begins: its floor is above every generation the server holds, and readers ignore
-- entries below their connection's floor. An entry the restart brought back is therefore a
-- miss, never a stale hit; tickets of the old epoch are refused by fenced puts.
--
-- The floor is also at least the server's clock in microseconds, so that it grows across a
-- flush that resets the counter (no server runs a million writes a second for long).
--
-- Returns the floor.
local current = redis.call('GET', KEYS[1])
if current then
    local floor, run_id = string.match(current, '^(%d+) (.+)$')
    if run_id == ARGV[1] then
        return floor
    end
end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local generation = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
-- string.format, not tostring: Lua prints numbers past 14 digits in exponent notation.
local floor = string.format('%d', math.max(generation + 1, now_us))
redis.call('SET', KEYS[2], floor)
redis.call('SET', KEYS[1], floor .. ' ' .. ARGV[1])
return floor

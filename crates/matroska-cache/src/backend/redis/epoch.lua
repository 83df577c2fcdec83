#!lua flags=allow-oom
-- allow-oom: a shard must start its new epoch on a full server too (after a failover or a
-- restart), or nothing could be read, invalidated or stored there; it writes fixed-size keys.
--
-- The handshake a connection runs for a shard before it serves the shard: the shard's epoch
-- for the server process it reached.
--
-- KEYS[1]      the shard's epoch: "<floor> <identity>"
-- KEYS[2]      the shard's generation counter
-- KEYS[3]      the shard's ticket floor: fenced puts with an older ticket are refused here
-- KEYS[4]      the shard's "directories incomplete" mark (sharded caches: see home.lua)
-- KEYS[5]      the shard's directory version (sharded caches: see registrations.rs)
-- ARGV[1]      the server's identity, "<run id>/<replication id>" (INFO server, INFO
--              replication), read on this same connection
-- ARGV[2]      '' for a cache of one shard (its counter is the ticket counter), 'T' for the
--              shard that holds the ticket counter of a sharded cache, 'S' for the others
--
-- A server that restarted (a crash, a failover, a reload of an older snapshot or AOF) has a
-- new run id; a master that was demoted, resynced from a replica that missed writes, and
-- promoted again has its run id but a new replication id: either is a new identity. Its
-- data may be older than invalidations that had already returned, so a new epoch begins:
-- its floor is above every generation the server holds, and readers ignore entries below
-- their connection's floor. An entry the restart brought back is therefore a
-- miss, never a stale hit. The shard's fence marks may be lost too, so tickets taken before
-- the new epoch are refused: the ticket floor is set to a value of the ticket counter read
-- after the epoch began (by this script where the counter lives, else by the caller, with
-- ticket_floor.lua; until then every fenced put here is refused).
--
-- The floor is also at least the server's clock in microseconds, so that it grows across a
-- flush that resets the counter (no server runs a million writes a second for long).
--
-- Returns {floor, 1 if the ticket floor is set else 0, 1 if this call began the epoch,
-- the directory version ('' for a cache of one shard)}.
local current = redis.call('GET', KEYS[1])
local floor = nil
local began = 0
if current then
    local known, identity = string.match(current, '^(%d+) (.+)$')
    if identity == ARGV[1] then
        floor = known
    end
end
if not floor then
    local t = redis.call('TIME')
    local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local generation = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    -- string.format, not tostring: Lua prints numbers past 14 digits in exponent notation.
    floor = string.format('%d', math.max(generation + 1, now_us))
    redis.call('SET', KEYS[2], floor)
    redis.call('SET', KEYS[1], floor .. ' ' .. ARGV[1])
    redis.call('DEL', KEYS[3])
    began = 1
    if ARGV[2] ~= '' then
        -- Directory bits written before may be lost with the rest: until a repair pass has
        -- rebuilt them from every shard's indexes, invalidations of dependencies homed here
        -- visit every shard.
        redis.call('SET', KEYS[4], floor)
    end
end
local version = ''
if ARGV[2] ~= '' then
    -- A new epoch renews the version: a registration remembered under the old one may name
    -- a bit this shard's directories lost, or a version a repair set and the failover lost.
    version = redis.call('GET', KEYS[5])
    if began == 1 or not version then
        version = floor .. '/0'
        redis.call('SET', KEYS[5], version)
    end
end
if redis.call('EXISTS', KEYS[3]) == 0 then
    if ARGV[2] == '' then
        redis.call('SET', KEYS[3], floor)
    elseif ARGV[2] == 'T' then
        redis.call('SET', KEYS[3], string.format('%d', redis.call('INCR', KEYS[2])))
    else
        return {floor, 0, began, version}
    end
end
return {floor, 1, began, version}

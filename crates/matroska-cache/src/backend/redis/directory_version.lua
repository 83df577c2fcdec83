#!lua flags=allow-oom
-- allow-oom: puts and repairs must renew versions on a full server; one fixed-size key.
--
-- Renews a shard's directory version (sharded caches: see registrations.rs), before a
-- repair pass reads the shard's index slices: a put in this shard that skipped its
-- registrations under the old version is refused from now on, and registers again.
--
-- KEYS[1]      the shard's directory version: "<epoch floor>/<n>"
--
-- Returns the new version.
local version = redis.call('GET', KEYS[1]) or '0/0'
local base, n = string.match(version, '^(.*)/(%d+)$')
if not base then
    base, n = version, '0'
end
version = base .. '/' .. string.format('%d', tonumber(n) + 1)
redis.call('SET', KEYS[1], version)
return version

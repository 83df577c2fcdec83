-- Whether a fresh entry is stored under a key: its generation (the first 20 digits, for the
-- caller's epoch check), or '' if there is none or it is past its TTL (a fail-safe fallback
-- only).
--
-- KEYS[1]      the entry
-- ARGV[1]      now, in ms since the UNIX epoch, 20 digits
local generation = redis.call('GETRANGE', KEYS[1], 0, 19)
if generation == '' or not entry_wanted(KEYS[1], 0, ARGV[1]) then
    return ''
end
return generation

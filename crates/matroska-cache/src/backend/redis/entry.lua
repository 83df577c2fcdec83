-- How scripts read an entry's freshness (the layout is in entry.rs): an entry with a fallback
-- window has its format tag in upper case and two instants of 20 digits after its dependency
-- list, "stops being fresh" then "due for a refresh", in ms since the UNIX epoch.

-- The instant `field` (0: stops being fresh, 1: due for a refresh) of the entry at `key`, or
-- '' if it has none (an entry fresh until its TTL, or none at all).
local function entry_instant(key, field)
    local head = redis.call('GETRANGE', key, 20, 30)
    local tag = string.byte(head, 1)
    if not tag or tag < 65 or tag > 90 then
        return ''
    end
    local len = tonumber(string.sub(head, 2, 11))
    if not len then
        return ''
    end
    local at = 31 + len + 20 * field
    return redis.call('GETRANGE', key, at, at + 19)
end

-- Whether the entry at `key` is what a reader wants at `now` (20 digits): fresh (field 0) or
-- not due for a refresh (field 1). Fixed-width digits compare as text.
local function entry_wanted(key, field, now)
    local instant = entry_instant(key, field)
    return instant == '' or instant > now
end

-- Reads an entry's header and dependency list without its value (which may be large).
--
-- KEYS[1]      the entry (see entry.rs: 20-digit generation, format tag, 10-digit length of
--              the dependency list, the list, then the value)
--
-- Returns the entry up to the end of its dependency list, or nil if there is no entry. A
-- header that does not parse is returned as it is, for the client to report.
local head = redis.call('GETRANGE', KEYS[1], 0, 30)
if head == '' and redis.call('EXISTS', KEYS[1]) == 0 then
    return false
end
local len = tonumber(string.sub(head, 22, 31))
if #head < 31 or not len then
    return head
end
return redis.call('GETRANGE', KEYS[1], 0, 30 + len)

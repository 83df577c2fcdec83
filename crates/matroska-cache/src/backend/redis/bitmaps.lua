-- Directory bitmaps, shared by bury.lua and settle.lua (prepended to each when it is loaded:
-- see `scripts.rs`).

-- Moves the bitmap at `from` into `into`: OR-ed into it if it exists, else renamed. `from`
-- must exist; it is gone afterwards.
local function merge_bitmap(from, into)
    if redis.call('EXISTS', into) == 1 then
        redis.call('BITOP', 'OR', into, into, from)
        redis.call('DEL', from)
    else
        redis.call('RENAME', from, into)
    end
end

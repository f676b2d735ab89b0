-- Renew the leases of everything a consumer holds on one stream: XCLAIM to itself with JUSTID
-- resets the idle time without counting a delivery.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer. Returns how many were renewed.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 10000, ARGV[2])
local ids = {}
local renewed = 0
for i, entry in ipairs(pending) do
  ids[#ids + 1] = entry[1]
  if #ids == 500 or i == #pending then
    renewed = renewed + #ids
    -- unpack() expands to all its values only as the last argument: JUSTID goes in the table
    ids[#ids + 1] = 'JUSTID'
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))
    ids = {}
  end
end
return renewed

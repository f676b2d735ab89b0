-- Hand a consumer's prefetched, unstarted messages on one stream back to the queue: each is added
-- again as a new entry (ready for any consumer) and the old one acknowledged and deleted.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] entry to keep (the running one, or '').
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 10000, ARGV[2])
local moved = 0
for _, entry in ipairs(pending) do
  local id = entry[1]
  if id ~= ARGV[3] then
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found == 1 then
      redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
      moved = moved + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
end
return moved

-- Drop the entries of one ready stream that no consumer has been handed yet (waiting messages);
-- delivered ones stay, so in-flight tasks finish, or are reclaimed after a crash, normally.
-- KEYS[1] stream; ARGV[1] group. Returns the number of entries deleted.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = nil
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local fields = {}
    for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
    if fields['name'] == ARGV[1] then last = fields['last-delivered-id'] end
  end
end
if last == nil then  -- no group: nothing was ever delivered
  return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
end
local removed = 0
while true do
  local batch = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1000)
  if #batch == 0 then return removed end
  local ids = {}
  for i, entry in ipairs(batch) do ids[i] = entry[1] end
  removed = removed + redis.call('XDEL', KEYS[1], unpack(ids))
  last = ids[#ids]
end

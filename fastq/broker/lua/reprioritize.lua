-- Move a ready (not yet delivered) message to another priority stream of the same queue.
-- KEYS[1] current stream; KEYS[2] target stream; ARGV[1] group; ARGV[2] entry id;
-- ARGV[3] new level (0..4). The level is also rewritten in the envelope (byte 4, see codec).
-- Returns 1 when moved, 0 when the entry is gone or already delivered.
-- No consumer group yet (no worker has read this queue) means nothing was delivered: NOGROUP
-- is not an error here.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(pending) == 'table' and pending.err == nil and #pending > 0 then
  return 0
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  return 0
end
local fields = found[1][2]
local data
for i = 1, #fields, 2 do
  if fields[i] == 'm' then data = fields[i + 1] end
end
if data == nil or #data < 4 then
  return 0
end
data = string.sub(data, 1, 3) .. string.char(tonumber(ARGV[3])) .. string.sub(data, 5)
redis.call('XADD', KEYS[2], '*', 'm', data)
redis.call('XDEL', KEYS[1], ARGV[2])
return 1

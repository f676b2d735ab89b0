-- Move one dead letter back into a ready stream, atomically: XADD its original envelope, XDEL it.
-- KEYS[1] the queue's dead-letter stream; KEYS[2] the ready stream to put it in (same queue, the
-- priority level of its envelope: same hash tag, so one cluster slot)
-- ARGV[1] the dead-letter entry id
-- Returns the new entry id, false when the entry is gone (already requeued or purged), or an error
-- when the entry has no fastq envelope (the caller checks this first; this is the last guard).
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then
  return false
end
local fields = entry[1][2]
local data = nil
for i = 1, #fields, 2 do
  if fields[i] == 'm' then
    data = fields[i + 1]
    break
  end
end
-- magic 0xFA, version 1: the same check decode_message starts with
if data == nil or string.len(data) < 30 or string.byte(data, 1) ~= 250 or string.byte(data, 2) ~= 1 then
  return redis.error_reply('not a fastq envelope: dead letter ' .. ARGV[1] .. ' cannot be requeued')
end
local new_id = redis.call('XADD', KEYS[2], '*', 'm', data)
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id

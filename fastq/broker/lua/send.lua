-- Send a batch of messages in one call: app.batch() / Task.map (in chunks), and
-- app.batch(atomic=True) (all or nothing, in one call).
-- KEYS[i] where item i goes: a ready stream (XADD) or the queue's delayed set (ZADD)
-- ARGV[1] '1': atomic, check every key before writing anything; '0': just write
-- ARGV[2i] the item's due time in ms ('0': ready now, XADD), ARGV[2i+1] the envelope (stream
-- field m) or the delayed-set member (see promote.lua)
-- MULTI/EXEC does not roll back: a key of the wrong type fails its own write after the others
-- were made. So an atomic batch checks every key first, and writes nothing unless all can succeed.
-- Returns the number of messages sent.
if ARGV[1] == '1' then
  for i, key in ipairs(KEYS) do
    local want = 'zset'
    if ARGV[2 * i] == '0' then want = 'stream' end
    local found = redis.call('TYPE', key)['ok']
    if found ~= 'none' and found ~= want then
      return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. want ..
                               ': nothing of the atomic batch was sent')
    end
  end
end
for i, key in ipairs(KEYS) do
  local due = ARGV[2 * i]
  if due == '0' then
    redis.call('XADD', key, '*', 'm', ARGV[2 * i + 1])
  else
    redis.call('ZADD', key, due, ARGV[2 * i + 1])
  end
end
return #KEYS

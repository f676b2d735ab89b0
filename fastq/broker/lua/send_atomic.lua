-- Send a batch of messages all or nothing (``app.batch(atomic=True)``).
-- KEYS[i] where item i goes: a ready stream (XADD) or the queue's delayed set (ZADD)
-- ARGV[2i-1] the item's due time in ms ('0': ready now, XADD), ARGV[2i] the envelope (stream
-- field m) or the delayed-set member (see promote.lua)
-- MULTI/EXEC does not roll back: a key of the wrong type fails its own write after the others
-- were made. So every key is checked first, and nothing is written unless all writes can succeed.
-- Returns the number of messages sent.
for i, key in ipairs(KEYS) do
  local want = 'zset'
  if ARGV[2 * i - 1] == '0' then want = 'stream' end
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. want ..
                             ': nothing of the atomic batch was sent')
  end
end
for i, key in ipairs(KEYS) do
  local due = ARGV[2 * i - 1]
  if due == '0' then
    redis.call('XADD', key, '*', 'm', ARGV[2 * i])
  else
    redis.call('ZADD', key, due, ARGV[2 * i])
  end
end
return #KEYS

-- Move due messages from a queue's delayed set into its priority streams, atomically.
-- KEYS[1] delayed zset; KEYS[2..6] streams p0..p4
-- ARGV[1] now (ms); ARGV[2] most to move in one call
-- A member is one byte (the level, 0..4) followed by the envelope.
-- Returns {moved, score of the next waiting member or false}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local level = string.byte(member, 1)
  if level == nil or level > 4 then level = 2 end
  redis.call('XADD', KEYS[2 + level], '*', 'm', string.sub(member, 2))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}

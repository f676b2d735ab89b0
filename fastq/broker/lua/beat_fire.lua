-- Fire one instant of one beat entry: send its messages and record the instant, or do nothing.
-- KEYS[1] the leader lease; KEYS[2] the instant's dedup marker (fastq:beat:fired:{entry}:{ms});
-- KEYS[3] the last-fired hash (entry -> ms); KEYS[4] the set of queue names;
-- KEYS[4 + i] where message i goes: a ready stream (XADD) or the queue's delayed set (ZADD)
-- ARGV[1] beat id; ARGV[2] entry name; ARGV[3] fire ms; ARGV[4] ms the dedup marker lives;
-- then per message i: ARGV[2 + 3i] queue, ARGV[3 + 3i] due ms ('0': ready now),
-- ARGV[4 + 3i] the envelope (stream field m) or the delayed-set member (see promote.lua)
-- Returns 1 sent and recorded, 0 already fired (marker set, or an instant at or after this one
-- recorded), -1 this beat does not hold the lease; an error when a key has the wrong type, before
-- anything was written (so a fire is recorded if and only if its messages were sent).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local last = redis.call('HGET', KEYS[3], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then
  return 0
end
local function check(key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. want ..
                             ': beat entry ' .. ARGV[2] .. ' not fired')
  end
end
local bad = check(KEYS[4], 'set')
for i = 5, #KEYS do
  if bad then break end
  if ARGV[3 * (i - 4) + 3] == '0' then bad = check(KEYS[i], 'stream') else bad = check(KEYS[i], 'zset') end
end
if bad then
  return bad
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[4]) then
  return 0
end
for i = 5, #KEYS do
  local j = 3 * (i - 4) + 2
  redis.call('SADD', KEYS[4], ARGV[j])
  if ARGV[j + 1] == '0' then
    redis.call('XADD', KEYS[i], '*', 'm', ARGV[j + 2])
  else
    redis.call('ZADD', KEYS[i], ARGV[j + 1], ARGV[j + 2])
  end
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1

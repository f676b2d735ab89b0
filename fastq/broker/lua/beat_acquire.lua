-- Take or keep the beat leader lease (fastq/beat.py): SET NX PX, or extend it if this beat holds it.
-- KEYS[1] the leader lease (string with TTL: the holder's beat id); KEYS[2] when a leader was last
-- alive (string, epoch ms: tells a handover from downtime)
-- ARGV[1] beat id; ARGV[2] lease ms; ARGV[3] now ms
-- Returns {1, previous "last alive" ms or nil} when this beat leads now (and records now as last
-- alive), else {0, PTTL of the holder's lease}.
local function take()
  local seen = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return {1, seen}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return take()
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return take()
end
return {0, redis.call('PTTL', KEYS[1])}

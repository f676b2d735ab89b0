-- Give the beat leader lease up (a clean exit), so that a standby takes over at once.
-- KEYS[1] the leader lease; KEYS[2] when a leader was last alive (epoch ms)
-- ARGV[1] beat id; ARGV[2] now ms
-- Returns 1 if released (and now recorded as last alive), 0 if this beat did not hold it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1

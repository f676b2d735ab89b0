-- Renew the beat leader lease: compare (this beat holds it) and extend.
-- KEYS[1] the leader lease; KEYS[2] when a leader was last alive (epoch ms)
-- ARGV[1] beat id; ARGV[2] lease ms; ARGV[3] now ms
-- Returns 1 if renewed (and now recorded as last alive), 0 if another beat holds it or it expired.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1

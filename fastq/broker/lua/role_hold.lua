-- Hold a role that one process at a time plays (e.g. the worker that reports queue-wide metrics).
-- KEYS[1] role key; ARGV[1] holder; ARGV[2] ttl ms
-- Returns 1 when ARGV[1] holds the role now (taken, or held and renewed), else 0.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

-- Claim a uniqueness key for a task, or say who holds it.
-- KEYS[1] unique key; ARGV[1] task id; ARGV[2] ttl ms
-- Returns false when claimed for ARGV[1], else the id of the task that holds the key.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])

-- Release a uniqueness key, but only if the finishing task still owns it.
-- KEYS[1] unique key; ARGV[1] owner task id
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

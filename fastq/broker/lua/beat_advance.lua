-- Record an instant of a beat entry as handled without sending it (skipped by the missed-fire
-- policy, or the baseline of an entry the beat has never seen). Never moves an entry back.
-- KEYS[1] the leader lease; KEYS[2] the last-fired hash (entry -> ms)
-- ARGV[1] beat id; ARGV[2] entry name; ARGV[3] the instant, ms
-- Returns 1 (recorded, or an instant at or after it already was), -1 this beat does not hold
-- the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if not last or tonumber(last) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1

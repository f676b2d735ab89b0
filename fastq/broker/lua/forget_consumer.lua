-- Remove a consumer from the group of each stream of one queue, only if it holds nothing there:
-- XGROUP DELCONSUMER drops the consumer's pending entries with it (nobody would ever run them), so
-- the check and the delete are one atomic step. What a dead consumer holds comes back by reclaim
-- (XAUTOCLAIM moves it to a live consumer); then this removes it.
-- KEYS the queue's streams (one hash tag, so one cluster slot); ARGV[1] group; ARGV[2] consumer
-- Returns 1 when the consumer is in none of these groups any more, 0 when it holds entries (kept).
for _, key in ipairs(KEYS) do
  local rows = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if type(rows) == 'table' and rows.err == nil and #rows > 0 then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.pcall('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])  -- no stream or group: nothing to do
end
return 1

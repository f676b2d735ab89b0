-- Send a workflow node that became ready, once: the node id is the dedup key, so the worker that
-- made it ready and a sweeper that finds it still in the outbox cannot both send it.
-- KEYS[1] the ready stream (XADD) or the queue's delayed set (ZADD), KEYS[2] the node's marker
-- ARGV[1] due ms ('0': ready now), ARGV[2] the envelope (or delayed-set member), ARGV[3] marker TTL ms
-- ARGV[4], ARGV[5] (optional, ready now only): a consumer group and consumer that read the stream
-- at once, in this call, one entry for themselves: the worker that sends a node it will run next
-- (a chain's next step) takes it before a blocked reader elsewhere is woken for it.
-- Returns 1 if sent now, 0 if it had been sent before; with ARGV[5], {1, what was read}.
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
if ARGV[1] == '0' then
  redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
  if ARGV[5] then
    return {1, redis.call('XREADGROUP', 'GROUP', ARGV[4], ARGV[5], 'COUNT', 1,
                          'STREAMS', KEYS[1], '>')}
  end
else
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
end
return 1

-- Record the outcome of workflow nodes and collect the nodes that are now ready to send (or have
-- failed because something upstream failed), in one call on one graph (fastq/workflows/).
-- KEYS[1] the graph hash, KEYS[2] its outbox hash (node id -> ms it became ready)
-- ARGV[1] now ms; ARGV[2] TTL ms of a finished graph; ARGV[3] '1': also collect outbox items
-- that became ready at least ARGV[4] ms ago (the sweeper's call, after a worker died between
-- this call and sending); then triples: node id, 's' (succeeded) or 'f' (failed), its record.
-- Graph fields: n:ID spec, p:ID its parents' d: fields (a JSON array, the order results are fed in),
-- k:ID its dependents ('!' before one that runs even when ID fails), w:ID dependencies not yet
-- met, d:ID its outcome (a result record, or 'u:' .. the id of the failed node upstream),
-- left: nodes without an outcome, wait: nodes not yet sent because a dependency is not met (for
-- the metrics: left - wait are running), ttl: the safety TTL (ms) while the graph runs.
-- Recording is idempotent: a node whose outcome exists (a re-run after a crash, a late write)
-- changes nothing, so no dependent is counted down or released twice.
-- e:ID its errbacks. Returns {left, item, ...}; item = {id, kind, spec, errbacks, value, ...}:
-- 'r' ready: {id, 'r', spec, errbacks, n, n pairs (successor id, its spec), the outcomes of its
-- parents in p: order...}, where the pairs are its chain of lone successors (each the only
-- dependent of the one before, waiting on it alone), up to AHEAD of them: the worker that runs
-- the node may run or send those itself as each succeeds (fastq/workflows/handoff.py); 'u' failed
-- upstream, with the failed node's record and id; 'f' failed itself (listed only when it has
-- errbacks), with its record.
local g, out = KEYS[1], KEYS[2]
local now = ARGV[1]
if redis.call('EXISTS', g) == 0 then
  return {-1}  -- expired, or never written: nothing to advance
end
local fresh = {}  -- ids in the order they became ready (or failed)

local function words(s)
  local list = {}
  if s then
    for w in string.gmatch(s, '%S+') do list[#list + 1] = w end
  end
  return list
end

local settled = 0  -- applied to 'left' once, at the end
local unwaited = 0  -- waiting nodes released or failed upstream: applied to 'wait' at the end
local function settle(node, value)
  if redis.call('HSETNX', g, 'd:' .. node, value) == 0 then return false end
  settled = settled + 1
  return true
end

-- successes count their dependents down once per dependent and call: a chord body is counted
-- down by a whole batch of its header in one HINCRBY
local counted, counts = {}, {}

local function ready(node)
  redis.call('HSET', out, node, now)
  fresh[#fresh + 1] = node
end

-- walk the dependents of a settled node; failed: the id of the node whose failure spreads
local function advance(first, first_failed)
  local stack = {{first, first_failed}}
  while #stack > 0 do
    local top = table.remove(stack)
    local node, failed = top[1], top[2]
    for _, entry in ipairs(words(redis.call('HGET', g, 'k:' .. node))) do
      local anyway = string.sub(entry, 1, 1) == '!'
      local kid = anyway and string.sub(entry, 2) or entry
      if failed and not anyway then
        -- unsettled until now, so still waiting: a dependency of it (node) was unmet
        if settle(kid, 'u:' .. failed) then
          unwaited = unwaited + 1
          ready(kid)
          stack[#stack + 1] = {kid, failed}
        end
      elseif counts[kid] then
        counts[kid] = counts[kid] + 1
      else
        counted[#counted + 1] = kid
        counts[kid] = 1
      end
    end
  end
end

for i = 5, #ARGV, 3 do
  local node, kind = ARGV[i], ARGV[i + 1]
  if settle(node, ARGV[i + 2]) then
    if kind == 'f' and redis.call('HEXISTS', g, 'e:' .. node) == 1 then
      ready(node)  -- its errbacks are to be sent
    end
    advance(node, kind == 'f' and node or nil)
  end
end
for _, kid in ipairs(counted) do  -- one that failed upstream meanwhile is settled already
  if redis.call('HEXISTS', g, 'd:' .. kid) == 0
      and redis.call('HINCRBY', g, 'w:' .. kid, -counts[kid]) == 0 then
    ready(kid)
    unwaited = unwaited + 1
  end
end
if settled > 0 then redis.call('HINCRBY', g, 'left', -settled) end
if unwaited > 0 and redis.call('HEXISTS', g, 'wait') == 1 then
  redis.call('HINCRBY', g, 'wait', -unwaited)
end

local ttl = redis.call('HGET', g, 'ttl')
if ARGV[3] == '1' then
  local flat = redis.call('HGETALL', out)
  local oldest = tonumber(now) - tonumber(ARGV[4])
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) <= oldest then fresh[#fresh + 1] = flat[i] end
  end
end
if #fresh > 0 then redis.call('PEXPIRE', out, ttl) end

local left = tonumber(redis.call('HGET', g, 'left'))
if left <= 0 then  -- finished: keep it as long as results are kept
  redis.call('PEXPIRE', g, ARGV[2])
  if #fresh > 0 then redis.call('PEXPIRE', out, ARGV[2]) end
end

-- the dependent that a success of node releases for certain: its only one, plain (not '!'),
-- waiting on node alone and not settled yet; nil if there is none
local function lone_successor(node)
  local kids = redis.call('HGET', g, 'k:' .. node)
  if not kids or string.find(kids, ' ', 1, true) or string.sub(kids, 1, 1) == '!' then
    return nil
  end
  local state = redis.call('HMGET', g, 'w:' .. kids, 'p:' .. kids, 'd:' .. kids, 'n:' .. kids)
  if state[1] ~= '1' or state[3] or not state[2] or not state[4] then return nil end
  local parents = cjson.decode(state[2])
  if #parents ~= 1 or parents[1] ~= 'd:' .. node then return nil end
  return kids, state[4]
end

local AHEAD = 64  -- successors named per ready node (a worker runs them, then asks again)
local function chain_ahead(item, node)
  local count_at = #item + 1
  item[count_at] = 0
  local n, at = 0, node
  while n < AHEAD do
    local kid, spec = lone_successor(at)
    if not kid then break end
    item[#item + 1] = kid
    item[#item + 1] = spec
    n, at = n + 1, kid
  end
  item[count_at] = n
end

local reply = {left}
for _, node in ipairs(fresh) do
  local outcome = redis.call('HGET', g, 'd:' .. node)
  local spec = redis.call('HGET', g, 'n:' .. node) or ''
  local errbacks = redis.call('HGET', g, 'e:' .. node) or ''
  local item
  if not outcome then  -- ready to run: with what its parents gave
    item = {node, 'r', spec, errbacks}
    chain_ahead(item, node)
    local parents = redis.call('HGET', g, 'p:' .. node)
    local fields = parents and cjson.decode(parents) or {}
    for first = 1, #fields, 1000 do  -- one HMGET per 1000 parents (a chord body has many)
      local part = redis.call('HMGET', g, unpack(fields, first, math.min(first + 999, #fields)))
      for _, value in ipairs(part) do item[#item + 1] = value or '' end
    end
  elseif string.sub(outcome, 1, 2) == 'u:' then  -- failed upstream: the cause's record
    local cause = string.sub(outcome, 3)
    item = {node, 'u', spec, errbacks, redis.call('HGET', g, 'd:' .. cause) or '', cause}
  else  -- failed itself, with errbacks to send
    item = {node, 'f', spec, errbacks, outcome}
  end
  reply[#reply + 1] = item
end
return reply

-- Token bucket shared by every worker: take up to ARGV[2] tokens, atomically.
-- KEYS[1] bucket hash {tokens, ts (ms)}
-- ARGV[1] rate (tokens per second, > 0); ARGV[2] tokens wanted (n >= 1);
-- ARGV[3] capacity (burst, >= 1); ARGV[4] now in ms, or '' for the Redis server clock (TIME), so
-- that all workers share one clock.
-- Returns {granted, ms until the next token is available (0 when one is left)}.
local rate = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  if redis.replicate_commands then
    pcall(redis.replicate_commands) -- Redis < 5: allow writes after TIME (effects replication)
  end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local per_ms = rate / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity -- a new (or expired, hence idle and full) bucket
  ts = now
elseif now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * per_ms)
  ts = now
end -- a clock behind ts (another caller's now_ms) refills nothing and keeps ts
tokens = math.min(tokens, capacity) -- the capacity may have been lowered since the last call
local granted = math.min(wanted, math.floor(tokens + 1e-9))
if granted < 0 then
  granted = 0
end
tokens = tokens - granted
local wait = 0
if tokens < 1 then
  wait = math.ceil((1 - tokens) / per_ms - 1e-9)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
-- an idle bucket refills to full within capacity / rate; after that it may as well not exist
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return {granted, wait}

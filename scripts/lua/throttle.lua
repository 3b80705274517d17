-- throttle.lua: a GCRA (generic cell rate algorithm) limiter on one key, on Redis's
-- clock, so every API process shares it and no host clock matters. The key holds the
-- theoretical arrival time (TAT, unix ms): the moment the limiter would be empty again.
-- A request is allowed when, counted, the TAT stays within burst intervals of now; the
-- allowance comes back evenly, one request per interval (a sliding window, not a
-- clock-minute one).
--
-- KEYS[1]   the limiter's key (expires when the limiter is empty)
-- ARGV[1]   emission interval in ms: the period divided by the limit
-- ARGV[2]   burst: how many requests may come at once (the limit)
-- ARGV[3]   'take':  count one request if it is allowed
--           'give':  return one request counted earlier (a login that succeeded)
--
-- Returns {1, 0} when allowed (or given back), {0, retry_ms} when refused: retry_ms is
-- how long until one request would be allowed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end

if ARGV[3] == 'give' then
  local back = tat - interval
  if back <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], string.format('%d', back), 'PX', string.format('%d', back - now))
  end
  return {1, 0}
end

local new = tat + interval
if new - now > tau then
  return {0, new - now - tau}
end
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', string.format('%d', new - now))
return {1, 0}

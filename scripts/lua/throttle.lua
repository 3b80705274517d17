-- throttle.lua: an exact sliding-window limiter for login and register, on Redis's
-- clock, so every API process shares it and no host clock matters. The key is a sorted
-- set of the requests it allowed in the last window, scored by when: at most `limit` of
-- them in any window of `window` ms, exactly (the limits are small: 10 and 30 entries at
-- the defaults). A limiter that allowed a burst and then refilled (GCRA), or one that
-- estimates from two clock windows, can let up to twice the limit through in one window.
--
-- KEYS[1]   the limiter's sorted set (expires a window after its newest entry)
-- ARGV[1]   window, ms
-- ARGV[2]   limit: requests per window
-- ARGV[3]   'take':  count one request if it is allowed
--           'give':  return the newest request counted (a login that succeeded)
-- ARGV[4]   a member id unique to this call (take)
--
-- Returns {1, 0} when allowed (or given back), {0, retry_ms} when refused: retry_ms is
-- how long until one request would be allowed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)

if ARGV[3] == 'give' then
  redis.call('ZPOPMAX', KEYS[1])
  return {1, 0}
end

if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + window - now + 1)}
end
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}

-- queue.lua: a SKU's waiting room: join it, or ask where one stands. Either call also
-- admits the buyers at the head of the queue that the room may admit now, so admission
-- needs no ticker: it happens lazily, atomically, on Redis's clock, whichever API
-- replica asks.
--
-- Places: a buyer who joins before the sale starts gets the random place the server drew
-- for them (ARGV[3], an integer below 2^52 from crypto/rand, never seen by the client);
-- the ones who join later get 2^52 + their arrival number. So the queue at the start is
-- a uniformly random order of the early arrivals, fixed once (each place is drawn once:
-- joining again keeps it), followed by the late arrivals in order.
--
-- Admission is a token bucket on Redis's clock holding at most C = max(1, floor(R/60))
-- tokens and refilled at (R - C + 1) per minute, R = admitPerMinute: whatever 60 s one
-- looks at, it admits at most C + (R - C + 1) - 1 = R buyers, yet a room polled only now
-- and then can still admit C at once. The bucket fills only while the sale is open. And
-- the room admits only while its unused passes are fewer than the available units.
--
-- Passes: an admitted buyer's pass is their entry in the passes sorted set, scored by its
-- expiry (ms); the pass the buyer shows is sha1(secret|sku|user|expiry), which take.lua
-- computes the same way, with the room's secret from the stock hash. A pass is spent by
-- the checkout or hold that succeeds with it (take.lua), or expires: the expired ones are
-- moved to the expired set here, which makes room for the next buyers.
--
-- KEYS[1]  stock hash (a available, ss/se sale window, w admitPerMinute (0 = no room),
--          wk the room's secret)
-- KEYS[2]  room state hash: n late arrivals so far, bt/bl the bucket's tokens and when
--          they were counted (ms), er/et the admissions-per-second estimate and its time
-- KEYS[3]  waiting buyers (sorted set: user by place)
-- KEYS[4]  unused passes (sorted set: user by expiry ms)
-- KEYS[5]  buyers whose pass expired unused (set)
-- ARGV[1]  'join' | 'poll'
-- ARGV[2]  user id
-- ARGV[3]  the place drawn for this user if they join before the start (join)
-- ARGV[4]  pass lifetime, ms
-- ARGV[5]  most buyers one call may admit
-- ARGV[6]  sku
--
-- Returns {'not_found'} (no such SKU), {'no_room'} (its waiting room is disabled), or
--   {'ok', status, position, eta_s, pass, pass_expires_ms, joined, admitted, expired, waiting}
-- status: 'waiting' | 'admitted' | 'sold_out' | 'expired' | 'absent' (not in the queue);
-- joined: 1 if this call put the user in the queue; admitted / expired: passes issued /
-- expired by this call; waiting: the queue's length after it.

local LATE = 4503599627370496 -- 2^52: every late place is behind every early one
local TAU = 30000             -- ms: the time constant of the admission-rate estimate

local now = now_ms()
local v = redis.call('HMGET', KEYS[1], 'a', 'ss', 'se', 'w', 'wk')
if not v[1] then return {'not_found'} end
local rate = tonumber(v[4]) or 0
if rate <= 0 then return {'no_room'} end
local avail, ss, se, secret = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, v[5] or ''
local mode, user, sku = ARGV[1], ARGV[2], ARGV[6]
local started = now >= ss
local open = started and (se == 0 or now < se)

-- Expired passes make room (at most 1000 a call: a backlog only admits a little later).
local expired = 0
if started then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
  expired = #gone
  if expired > 0 then
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('SADD', KEYS[5], unpack(gone))
  end
end

local joined = 0
if mode == 'join' then
  -- A buyer holding an unused pass stays admitted. (Checked before the start too: a
  -- sale moved back to the future may have admitted buyers already.)
  if not redis.call('ZSCORE', KEYS[4], user) then
    local place
    if started then
      place = LATE + redis.call('HINCRBY', KEYS[2], 'n', 1)
    else
      place = ARGV[3]
    end
    joined = redis.call('ZADD', KEYS[3], 'NX', place, user)
    if joined == 1 then redis.call('SREM', KEYS[5], user) end
  end
end

local burst = math.max(1, math.floor(rate / 60))
local per_ms = (rate - burst + 1) / 60000
local er, et, st = 0, now, nil
if started then
  st = redis.call('HMGET', KEYS[2], 'bt', 'bl', 'er', 'et')
  er, et = tonumber(st[3]) or 0, tonumber(st[4]) or now
end
local admitted = 0
if open then
  local tokens, last = tonumber(st[1]) or burst, math.max(tonumber(st[2]) or ss, ss)
  tokens = math.min(burst, tokens + math.max(0, now - last) * per_ms)
  local room = avail - redis.call('ZCARD', KEYS[4])
  local k = math.min(math.floor(tokens), room, tonumber(ARGV[5]))
  if k > 0 then
    local head = redis.call('ZPOPMIN', KEYS[3], k)
    admitted = #head / 2
    if admitted > 0 then
      local exp = now + tonumber(ARGV[4])
      local add = {}
      for i = 1, #head, 2 do add[#add + 1] = exp; add[#add + 1] = head[i] end
      redis.call('ZADD', KEYS[4], unpack(add))
      tokens = tokens - admitted
      er = er * math.exp(-(now - et) / TAU) + admitted * 1000 / TAU
      et = now
      redis.call('HSET', KEYS[2], 'bt', tostring(tokens), 'bl', now, 'er', tostring(er), 'et', et)
    end
  end
  -- Without an admission the bucket is left as it was: counting its refill from the
  -- last admission later gives the same tokens, and a poll costs one write less.
end

local waiting = redis.call('ZCARD', KEYS[3])
local rank = redis.call('ZRANK', KEYS[3], user)
if rank then
  if started and (avail <= 0 or not open) then
    return {'ok', 'sold_out', rank + 1, 0, '', 0, joined, admitted, expired, waiting}
  end
  -- Seconds to wait: the places ahead at the rate the room really admits, leaning on
  -- the configured rate until the sale has been open for TAU.
  local r = per_ms * 1000
  if started then
    local seen = er * math.exp(-(now - et) / TAU)
    local w = math.min(1, (now - ss) / TAU)
    r = math.max(w * seen + (1 - w) * r, per_ms * 10)
  end
  local eta = math.ceil((rank + 1) / r)
  if not started then eta = eta + math.ceil((ss - now) / 1000) end
  return {'ok', 'waiting', rank + 1, math.min(eta, 604800), '', 0, joined, admitted, expired, waiting}
end
local exp = redis.call('ZSCORE', KEYS[4], user)
if exp then
  return {'ok', 'admitted', 0, 0, redis.sha1hex(secret .. '|' .. sku .. '|' .. user .. '|' .. exp), exp,
    joined, admitted, expired, waiting}
end
if redis.call('SISMEMBER', KEYS[5], user) == 1 then
  return {'ok', 'expired', 0, 0, '', 0, joined, admitted, expired, waiting}
end
return {'ok', 'absent', 0, 0, '', 0, joined, admitted, expired, waiting}

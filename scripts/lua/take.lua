-- take.lua: a batch of checkouts (mode 'order') and reservations (mode 'hold').
--
-- Requests are decided one after another, each all-or-nothing on its own and each
-- seeing the stock its predecessors left, so the batch is a sequence of atomic requests
-- (coalescing concurrent requests saves Redis a round trip per request). The script runs
-- in two phases: first every request is checked against copies of the levels held here,
-- with no write but the rate limit's count; then each touched stock hash is written
-- once, and each accepted request's counters, record and event are written: all order
-- records in one MSET, all events in one XADD. A redis.call costs about 2 us in Redis 7.0 whatever it does, so a
-- batch makes a fixed number of calls, not a few per request.
--
-- Order records are written without a TTL: the syncer gives each one its TTL once
-- MongoDB has the order, so a record (and the idempotency key it carries) never expires
-- before it is durable.
--
-- 'order' moves units available -> sold and records an order; 'hold' moves them
-- available -> reserved and records a hold that expires.
--
-- Idempotency: a request with a key arrives with a record id derived from (user, key)
-- and the request's fingerprint. The record is then its own idempotency record: if it
-- exists, the request is a replay (same fingerprint) or a reuse (another one). A
-- request without a key carries a fresh id the server drew, and the same rule holds: an
-- existing record means this very request already ran (its reply was lost and the call
-- was sent again), so it is a replay, never a second sale. A record restored from
-- MongoDB, whose request fingerprint is not known, carries fingerprint '*' and replays
-- for any request with its key.
--
-- A stock hash missing one of its fields refuses only the requests that touch that SKU
-- ('corrupt'), not the whole batch.
--
-- Waiting rooms: a line of a SKU whose room is enabled (stock hash field w > 0) needs the
-- user's unused pass for that SKU (queue.lua): the user's entry in the room's passes
-- sorted set, not expired, and its token sha1(secret|sku|user|expiry) among the tokens
-- the request carries. It is checked before anything else but the replay check (so a
-- retry of a request that spent its pass still replays), and spent (removed) only by
-- the request that succeeds with it: a refused request keeps its pass.
--
-- KEYS[1]        outbox stream
-- KEYS[2]        hold expiry index (sorted set: hold id by expiry ms)
-- then per request:
--   record: the order string or the hold hash (order strings are read with one MGET)
--   per line: stock hash, per-user purchase counter hash (used when the SKU has a limit),
--     the SKU's waiting-room passes (used when its room is enabled)
--   the user's rate-limit counter for this minute (used when the limit is set)
-- ARGV[1]        hold record TTL, seconds
-- then per request:
--   mode ('order' | 'hold'), user id, record id, fingerprint ('' = no idempotency key),
--   hold lifetime ms (holds), number of lines n, then n pairs of sku, quantity
--   (distinct SKUs, sorted), then the user's requests-per-minute limit (0 = none), then
--   the queue passes the request carries ('' = none; tokens joined by ',')
--
-- Returns, per request in order, a count c followed by c values:
--   'ok', ts, currency, lines, expires_at, passes   lines carry the unit prices; passes
--                                           names the SKUs whose pass it spent (',')
--   'pass', sku                             no valid queue pass for sku
--   'replay', id                            the caller reads that record
--   'reused'                                key seen with another request
--   'rate_limited', wait_ms                 over the user's requests per minute
--   'not_found', sku | 'window', sku | 'currency', sku | 'corrupt', sku
--   'bad_record', id                        the request's record exists but does not parse
--   'limit', sku, limit, already, requested
--   'oos', sku, requested, available, ...   every short line

-- A request's layout, named here once: its values start at ARGV index a, its keys at
-- KEYS index k (see the header). n is its number of lines.
-- (Offsets, not functions: a Lua call per field costs Redis measurable time per checkout.)
local MODE, USER, ID, FP, HOLD_MS, NLINES = 0, 1, 2, 3, 4, 5 -- ARGV[a + ...]
local LINE = 4   -- line i's sku is ARGV[a + LINE + 2i], its quantity the next
local LIMIT = 6  -- the requests-per-minute limit is ARGV[a + LIMIT + 2n]
local PASS = 7   -- the queue passes are ARGV[a + PASS + 2n]
local STOCK = -2 -- line i's stock hash is KEYS[k + STOCK + 3i], its counters and passes the next two
local RATE = 1   -- the user's rate-limit window is KEYS[k + RATE + 3n]
local KEYS_PER, ARGS_PER = 2, 8 -- a request takes KEYS_PER + 3n keys and ARGS_PER + 2n values
local FIRST_K, FIRST_A = 3, 2

local now = now_ms()
local now_s = tostring(now) -- formatted once: number formatting is a real cost here
local rec_ttl = ARGV[1]
local cache, order = {}, {}  -- stock key -> levels, and the keys in first-seen order
local counted = {}           -- bought key -> user -> units taken in this batch
local seen = {}              -- record key -> fingerprint, for records made in this batch
local existing = {}          -- order record key -> stored record, for keyed requests
local spent = {}             -- passes key -> user -> true, for passes spent in this batch
local spend = {}             -- passes key, user, ...: the passes phase two removes
local again = {}            -- record key, mode, fingerprint, ...: records replayed, written again

-- stock reads a stock hash once per batch; later requests see earlier ones' takes
-- because accepted requests update the cached levels.
local function stock(key, sku)
  local lv = cache[key]
  if lv == nil then
    local v = redis.call('HMGET', key, 'a', 'r', 's', 'q', 'p', 'c', 'l', 'ss', 'se', 'w', 'wk')
    lv = false
    if v[1] then
      local a, r, s, q = tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
      if a and r and s and q and tonumber(v[5]) and v[6] then
        lv = {a = a, r = r, s = s, q = q, q0 = q, sku = sku, p = v[5], c = v[6], l = tonumber(v[7]) or 0,
              ss = tonumber(v[8]) or 0, se = tonumber(v[9]) or 0, w = (tonumber(v[10]) or 0) > 0, wk = v[11] or ''}
        order[#order + 1] = key
      else
        lv = 'corrupt'
      end
    end
    cache[key] = lv
  end
  return lv
end

local function already_taken(key, user)
  local batch = counted[key] and counted[key][user] or 0
  return tonumber(redis.call('HGET', key, user) or '0') + batch
end

local BAD_RECORD = {} -- record_fp's answer for a record that exists but does not parse

-- fingerprint of an existing record ('' for a request without a key), or false.
local function record_fp(mode, rec)
  if seen[rec] then return seen[rec] end
  if mode == 'hold' then return redis.call('HGET', rec, 'f') end
  local v = existing[rec]
  -- A record that does not parse still exists: never sell again over it.
  if v then return (select(6, parse_order(v))) or BAD_RECORD end
  return false
end

-- One MGET for the order records any request may replay.
do
  local recs, k, a = {}, FIRST_K, FIRST_A
  while a <= #ARGV do
    if ARGV[a + MODE] == 'order' then recs[#recs + 1] = KEYS[k] end
    local n = tonumber(ARGV[a + NLINES])
    k, a = k + KEYS_PER + 3 * n, a + ARGS_PER + 2 * n
  end
  if #recs > 0 then
    local vals = redis.call('MGET', unpack(recs))
    for i, key in ipairs(recs) do
      if vals[i] then existing[key] = vals[i] end
    end
  end
end

-- decide checks one request and, if it is accepted, applies it to the cached levels.
-- It appends the request's reply to out (a count, then the values) and, for an
-- accepted request, what phase two must write to writes. It allocates as little as it
-- can: Redis collects Lua garbage only every 50 scripts, so a batch pays for its own.
local function decide(k, a, out, writes)
  local mode, user, id, fp, n = ARGV[a + MODE], ARGV[a + USER], ARGV[a + ID], ARGV[a + FP], tonumber(ARGV[a + NLINES])
  local rec = KEYS[k]
  local o = #out
  local old = record_fp(mode, rec)
  if old == BAD_RECORD then out[o + 1], out[o + 2], out[o + 3] = 2, 'bad_record', id return end
  if old then
    if old ~= fp and old ~= '*' then out[o + 1], out[o + 2] = 1, 'reused' return end
    out[o + 1], out[o + 2], out[o + 3] = 2, 'replay', id
    -- Written again in phase two, so that the WAIT behind this call covers the record
    -- this answer rests on (the call that made it may have been answered "unknown").
    if not seen[rec] then again[#again + 1], again[#again + 2], again[#again + 3] = rec, mode, old end
    return
  end
  local spends
  for i = 1, n do
    local lv = stock(KEYS[k + STOCK + 3 * i], ARGV[a + LINE + 2 * i])
    if lv and lv ~= 'corrupt' and lv.w then
      local sku, pk = lv.sku, KEYS[k + STOCK + 2 + 3 * i]
      local exp = not (spent[pk] and spent[pk][user]) and redis.call('ZSCORE', pk, user)
      if not exp or tonumber(exp) <= now or
          not string.find(ARGV[a + PASS + 2 * n], redis.sha1hex(lv.wk .. '|' .. sku .. '|' .. user .. '|' .. exp), 1, true) then
        out[o + 1], out[o + 2], out[o + 3] = 2, 'pass', sku
        return
      end
      spends = spends or {}
      spends[#spends + 1] = pk
      spends[#spends + 1] = sku
    end
  end
  local limit = tonumber(ARGV[a + LIMIT + 2 * n])
  if limit > 0 then
    local wait = over_rate(KEYS[k + RATE + 3 * n], limit)
    if wait then out[o + 1], out[o + 2], out[o + 3] = 2, 'rate_limited', wait return end
  end
  local short, currency = nil, nil
  for i = 1, n do
    local sku, qty = ARGV[a + LINE + 2 * i], tonumber(ARGV[a + LINE + 1 + 2 * i])
    local lv = stock(KEYS[k + STOCK + 3 * i], sku)
    if not lv then out[o + 1], out[o + 2], out[o + 3] = 2, 'not_found', sku return end
    if lv == 'corrupt' then out[o + 1], out[o + 2], out[o + 3] = 2, 'corrupt', sku return end
    if (lv.ss > 0 and now < lv.ss) or (lv.se > 0 and now >= lv.se) then
      out[o + 1], out[o + 2], out[o + 3] = 2, 'window', sku
      return
    end
    if currency and currency ~= lv.c then out[o + 1], out[o + 2], out[o + 3] = 2, 'currency', sku return end
    currency = lv.c
    if lv.l > 0 then
      local already = already_taken(KEYS[k + STOCK + 1 + 3 * i], user)
      if already + qty > lv.l then
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = 5, 'limit', sku, lv.l, already, qty
        return
      end
    end
    if lv.a < qty then
      short = short or {'oos'}
      short[#short + 1] = sku; short[#short + 1] = qty; short[#short + 1] = lv.a
    end
  end
  if short then
    out[o + 1] = #short
    for j, v in ipairs(short) do out[o + 1 + j] = v end
    return
  end

  local hold = mode == 'hold'
  local l, m
  for i = 1, n do
    local sku, qty = ARGV[a + LINE + 2 * i], ARGV[a + LINE + 1 + 2 * i]
    local lv, q = stock(KEYS[k + STOCK + 3 * i], sku), tonumber(qty)
    local move, line
    lv.a, lv.q = lv.a - q, lv.q + 1
    if hold then
      lv.r = lv.r + q
      move = sku .. ':' .. lv.q .. ':-' .. qty .. ':' .. qty .. ':0'
    else
      lv.s = lv.s + q
      move = sku .. ':' .. lv.q .. ':-' .. qty .. ':0:' .. qty
    end
    if lv.l > 0 then
      line = sku .. ':' .. qty .. ':' .. lv.p .. ':L'
      local bk = KEYS[k + STOCK + 1 + 3 * i]
      counted[bk] = counted[bk] or {}
      counted[bk][user] = (counted[bk][user] or 0) + q
    else
      line = sku .. ':' .. qty .. ':' .. lv.p
    end
    if i == 1 then l, m = line, move else l, m = l .. ',' .. line, m .. ',' .. move end
  end
  seen[rec] = fp
  local exp = ''
  if hold then exp = tostring(now + tonumber(ARGV[a + HOLD_MS])) end
  local used = ''
  if spends then
    for j = 1, #spends, 2 do
      local pk = spends[j]
      spent[pk] = spent[pk] or {}
      spent[pk][user] = true
      spend[#spend + 1] = pk
      spend[#spend + 1] = user
      used = used == '' and spends[j + 1] or used .. ',' .. spends[j + 1]
    end
  end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6], out[o + 7] = 6, 'ok', now_s, currency, l, exp, used
  local w = #writes
  writes[w + 1], writes[w + 2], writes[w + 3], writes[w + 4], writes[w + 5] = mode, rec, id, user, fp
  writes[w + 6], writes[w + 7], writes[w + 8], writes[w + 9] = currency, l, m, exp
end

-- Phase one: decide every request; nothing is written.
local out, writes, k, a = {}, {}, FIRST_K, FIRST_A
while a <= #ARGV do
  decide(k, a, out, writes)
  local n = tonumber(ARGV[a + NLINES])
  k, a = k + KEYS_PER + 3 * n, a + ARGS_PER + 2 * n
end

-- Phase two: levels first, one write per touched SKU, then counters, records, outbox.
local moved = {} -- the entry's field L: levels after the batch of each SKU it moved
for _, key in ipairs(order) do
  local lv = cache[key]
  redis.call('HSET', key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
  if lv.q ~= lv.q0 then moved[#moved + 1] = level_of(lv.sku, lv) end
end
for key, users in pairs(counted) do
  for user, q in pairs(users) do redis.call('HINCRBY', key, user, tostring(q)) end
end
local records, events = {}, {}
for w = 1, #writes, 9 do
  local mode, rec, id, user, fp = writes[w], writes[w + 1], writes[w + 2], writes[w + 3], writes[w + 4]
  local currency, l, m, exp = writes[w + 5], writes[w + 6], writes[w + 7], writes[w + 8]
  events[#events + 1] = tostring((w - 1) / 9)
  if mode == 'hold' then
    redis.call('HSET', rec, 'u', user, 'st', 'active', 'ts', now_s, 'x', exp, 'c', currency, 'l', l, 'f', fp)
    redis.call('EXPIRE', rec, rec_ttl)
    redis.call('ZADD', KEYS[2], exp, id)
    events[#events + 1] = take_event('hold', id, user, now_s, currency, l, m, exp)
  else
    records[#records + 1] = rec
    records[#records + 1] = order_record('confirmed', now_s, currency, '', l, fp, user)
    events[#events + 1] = take_event('order', id, user, now_s, currency, l, m, '')
  end
end
if #records > 0 then redis.call('MSET', unpack(records)) end
for i = 1, #spend, 2 do redis.call('ZREM', spend[i], spend[i + 1]) end
for i = 1, #again, 3 do
  if again[i + 1] == 'hold' then
    redis.call('HSET', again[i], 'f', again[i + 2])
  else
    redis.call('SET', again[i], existing[again[i]], 'KEEPTTL')
  end
end
if #events > 0 then
  events[#events + 1] = 'L'
  events[#events + 1] = table.concat(moved, ',')
  redis.call('XADD', KEYS[1], '*', unpack(events))
end
return out

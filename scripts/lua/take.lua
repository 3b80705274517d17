-- take.lua: a batch of checkouts (mode 'order') and reservations (mode 'hold').
--
-- Requests are decided one after another, each all-or-nothing on its own and each
-- seeing the stock its predecessors left, so the batch is a sequence of atomic requests
-- (coalescing concurrent requests saves Redis a round trip per request). The script runs
-- in two phases: first every request is checked against copies of the levels held here,
-- with no write at all; then each touched stock hash is written once, and each accepted
-- request's counters, record and outbox entry are written.
--
-- 'order' moves units available -> sold and records an order; 'hold' moves them
-- available -> reserved and records a hold that expires.
--
-- Idempotency: a request with a key arrives with a record id derived from (user, key)
-- and the request's fingerprint. The record is then its own idempotency record: if it
-- exists, the request is a replay (same fingerprint) or a reuse (another one).
--
-- KEYS[1]        outbox stream
-- KEYS[2]        hold expiry index (sorted set: hold id by expiry ms)
-- then per request:
--   record: the order string or the hold hash
--   per line: stock hash, per-user purchase counter hash (used when the SKU has a limit)
-- ARGV[1]        record TTL, seconds
-- then per request:
--   mode ('order' | 'hold'), user id, record id, fingerprint ('' = no idempotency key),
--   hold lifetime ms (holds), number of lines n, then n pairs of sku, quantity
--   (distinct SKUs, sorted)
--
-- Returns, per request in order, a count c followed by c values:
--   'ok', ts, currency, lines, expires_at   lines carry the unit prices
--   'replay', id                            the caller reads that record
--   'reused'                                key seen with another request
--   'not_found', sku | 'window', sku | 'currency', sku
--   'limit', sku, limit, already, requested
--   'oos', sku, requested, available, ...   every short line

local now = now_ms()
local now_s = tostring(now) -- formatted once: number formatting is a real cost here
local rec_ttl = ARGV[1]
local cache, order = {}, {}  -- stock key -> levels, and the keys in first-seen order
local counted = {}           -- bought key -> user -> units taken in this batch
local seen = {}              -- record key -> fingerprint, for records made in this batch

-- stock reads a stock hash once per batch; later requests see earlier ones' takes
-- because accepted requests update the cached levels.
local function stock(key)
  local lv = cache[key]
  if lv == nil then
    local v = redis.call('HMGET', key, 'a', 'r', 's', 'q', 'p', 'c', 'l', 'ss', 'se')
    lv = false
    if v[1] then
      lv = {a = tonumber(v[1]), r = tonumber(v[2]), s = tonumber(v[3]), q = tonumber(v[4]), p = v[5],
            c = v[6], l = tonumber(v[7]), ss = tonumber(v[8]), se = tonumber(v[9])}
      order[#order + 1] = key
    end
    cache[key] = lv
  end
  return lv
end

local function already_taken(key, user)
  local batch = counted[key] and counted[key][user] or 0
  return tonumber(redis.call('HGET', key, user) or '0') + batch
end

-- fingerprint of an existing record, or nil.
local function record_fp(mode, rec)
  if seen[rec] then return seen[rec] end
  if mode == 'hold' then return redis.call('HGET', rec, 'f') end
  local v = redis.call('GET', rec)
  if v then return (select(6, parse_order(v))) end
  return nil
end

-- decide checks one request and, if it is accepted, applies it to the cached levels.
-- It returns the reply and, for an accepted request, what phase two must write.
local function decide(k, a)
  local mode, user, id, fp, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 5])
  local rec = KEYS[k]
  if fp ~= '' then
    local old = record_fp(mode, rec)
    if old then
      if old ~= fp then return {'reused'} end
      return {'replay', id}
    end
  end
  local short, currency = {}, nil
  for i = 1, n do
    local sku, qty = ARGV[a + 4 + 2 * i], tonumber(ARGV[a + 5 + 2 * i])
    local lv = stock(KEYS[k - 1 + 2 * i])
    if not lv then return {'not_found', sku} end
    if (lv.ss > 0 and now < lv.ss) or (lv.se > 0 and now >= lv.se) then return {'window', sku} end
    if currency and currency ~= lv.c then return {'currency', sku} end
    currency = lv.c
    if lv.l > 0 then
      local already = already_taken(KEYS[k + 2 * i], user)
      if already + qty > lv.l then return {'limit', sku, lv.l, already, qty} end
    end
    if lv.a < qty then
      short[#short + 1] = sku; short[#short + 1] = qty; short[#short + 1] = lv.a
    end
  end
  if #short > 0 then
    table.insert(short, 1, 'oos')
    return short
  end

  local hold = mode == 'hold'
  local moves, lines = {}, {}
  for i = 1, n do
    local sku, qty = ARGV[a + 4 + 2 * i], ARGV[a + 5 + 2 * i]
    local lv, q = stock(KEYS[k - 1 + 2 * i]), tonumber(qty)
    lv.a, lv.q = lv.a - q, lv.q + 1
    if hold then
      lv.r = lv.r + q
      moves[i] = sku .. ':' .. lv.q .. ':-' .. qty .. ':' .. qty .. ':0'
    else
      lv.s = lv.s + q
      moves[i] = sku .. ':' .. lv.q .. ':-' .. qty .. ':0:' .. qty
    end
    if lv.l > 0 then
      lines[i] = sku .. ':' .. qty .. ':' .. lv.p .. ':L'
      local bk = KEYS[k + 2 * i]
      counted[bk] = counted[bk] or {}
      counted[bk][user] = (counted[bk][user] or 0) + q
    else
      lines[i] = sku .. ':' .. qty .. ':' .. lv.p
    end
  end
  seen[rec] = fp
  local exp = 0
  if hold then exp = now + tonumber(ARGV[a + 4]) end
  local l = table.concat(lines, ',')
  return {'ok', now_s, currency, l, exp}, {mode = mode, rec = rec, id = id, user = user, fp = fp,
    currency = currency, l = l, m = table.concat(moves, ','), exp = exp}
end

-- Phase one: decide every request; nothing is written.
local out, writes, k, a = {}, {}, 3, 2
while a <= #ARGV do
  local n = tonumber(ARGV[a + 5])
  local res, w = decide(k, a)
  if w then writes[#writes + 1] = w end
  out[#out + 1] = #res
  for _, v in ipairs(res) do out[#out + 1] = v end
  k, a = k + 1 + 2 * n, a + 6 + 2 * n
end

-- Phase two: levels first, one write per touched SKU, then counters, records, outbox.
for _, key in ipairs(order) do
  local lv = cache[key]
  redis.call('HSET', key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
end
for key, users in pairs(counted) do
  for user, q in pairs(users) do redis.call('HINCRBY', key, user, tostring(q)) end
end
for _, w in ipairs(writes) do
  if w.mode == 'hold' then
    local exp = tostring(w.exp)
    redis.call('HSET', w.rec, 'u', w.user, 'st', 'active', 'ts', now_s, 'x', exp, 'c', w.currency, 'l', w.l, 'f', w.fp)
    redis.call('EXPIRE', w.rec, rec_ttl)
    redis.call('ZADD', KEYS[2], exp, w.id)
    emit(KEYS[1], 'hold', w.id, w.user, now_s, w.currency, w.l, w.m, exp, '', '', '', '')
  else
    redis.call('SET', w.rec, order_record('confirmed', now_s, w.currency, '', w.l, w.fp, w.user), 'EX', rec_ttl)
    emit(KEYS[1], 'order', w.id, w.user, now_s, w.currency, w.l, w.m, '', '', '', '', '')
  end
end
return out

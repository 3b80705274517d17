-- xcart.lua: the steps of a cross-partition checkout (a cart whose SKUs live in several
-- partitions), one partition per call. The protocol (docs/ARCHITECTURE.md, "Partitions
-- on Redis Cluster"): the coordinator reserves the lines of every secondary partition
-- (reserve), then decides at the primary partition (decide: the commit point, which also
-- sells the primary's own lines and writes the order and its one outbox event), then
-- commits (commit) or releases (abort) the reservations. The decision for attempt T is
-- recorded once at the primary and never changes; resolve reads it, and makes it
-- 'aborted' if there is none yet (presumed abort), so a decide that arrives later fails.
-- A reservation ends committed or aborted and its record stays as a tombstone, so a late
-- or duplicate reserve of an ended attempt takes nothing. Every step is idempotent.
--
-- Units reserved here move available -> reserved (the stock hash's r) and are counted in
-- the partition's in-flight hash (SKU -> units), which tells "held by an in-flight
-- attempt" (busy: wait) from "sold out" (refuse). Each step that moves units makes an
-- outbox event of its own (xreserve, xcommit, xabort; decide's 'order') with its
-- movements, so every partition's movements reach MongoDB keyed by (SKU, sequence).
--
-- A call is a batch of steps, of any attempts, applied in order, each atomically, as
-- take.lua does: each step sees the levels its predecessors left. KEYS[1..3] are the
-- partition's outbox, in-flight hash and attempts index (by expiry); then each step's
-- own keys, one step after the other. ARGV holds, per step, its number of keys, its
-- number of values, then its values. The answer holds, per step, its number of values,
-- then its values; a step that fails answers 'error', message. Stock levels and
-- in-flight counts are read once and written once per batch, and the batch's events go
-- out as one outbox entry (fields 0, 1, ... and L, the levels after the batch): a step's
-- own writes are the attempt's records. Below, KEYS and ARGV are one step's own; its
-- ARGV[1] names it:
--
-- reserve  KEYS attempt record, then per line its stock hash and per-user counters
--          ARGV 'reserve', T, primary partition, order id, ttl ms, tombstone ttl s, user,
--               then sku, qty per line
--          -> 'ok', currency, lines | 'state', st ('h' | 'c' | 'a': the attempt existed)
--             | 'busy' | 'oos', sku, qty, available, ... | 'not_found'|'corrupt'|'window'|
--               'pass'|'currency', sku | 'limit', sku, limit, already, requested
-- commit   KEYS attempt record, then per line its stock hash and per-user counters
--          ARGV 'commit', T, tombstone ttl s, then the SKUs of the record's lines in order
--          -> 'committed' | 'aborted' | 'nohold'
-- abort    the keys and values of commit; a missing record becomes an aborted tombstone
--          -> 'aborted' | 'committed'
-- decide   KEYS decision, order record, rate-limit window, then per line of the primary
--               its stock hash and per-user counters
--          ARGV 'decide', T, order id, user, fingerprint, decision ttl s, rate limit,
--               other partitions' currency, other partitions' lines, then sku, qty per line
--          -> 'ok', ts, currency, lines | 'decided', 'c'|'a' | 'replay' | 'reused'
--             | 'rate_limited', ms | the refusals of reserve
-- resolve  KEYS decision   ARGV 'resolve', T, decision ttl s   -> 'c' | 'a'
-- confirm  KEYS order record   ARGV 'confirm'   -> 'ok', record | 'none'
--
-- A step that answers from a record it finds (a decision, an order) writes it again
-- (same value, same ttl): WAIT covers only what the connection wrote, so otherwise an
-- answer could rest on a write a failover loses.
--
-- Units of a SKU with a per-user limit count against the buyer's counter when reserved
-- (or sold, at the primary), as take.lua counts them, and their line is marked ':L';
-- an abort gives them back, so does a cancel.

local OUTBOX, INFLIGHT, ATTEMPTS = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local now_s = tostring(now)
local cache, order = {}, {} -- stock key -> levels, and the keys in first-seen order
local held = {}             -- sku -> units in flight (read once, then kept here)
local heldMoved = {}        -- the SKUs whose in-flight count this batch changed, in order
local events = {}           -- the batch's outbox entry: '0', event, '1', event, ...

-- stock reads a stock hash once per batch (nil if it does not exist); later steps see
-- earlier ones' moves.
local function stock(key, sku)
  local lv = cache[key]
  if lv ~= nil then return lv or nil end
  local v = redis.call('HMGET', key, 'a', 'r', 's', 'q', 'p', 'c', 'l', 'ss', 'se', 'w')
  if not v[1] then
    cache[key] = false
    return nil
  end
  lv = {sku = sku, key = key, a = tonumber(v[1]), r = tonumber(v[2]), s = tonumber(v[3]), q = tonumber(v[4]),
        p = v[5], c = v[6], l = tonumber(v[7]) or 0, ss = tonumber(v[8]) or 0, se = tonumber(v[9]) or 0,
        w = tonumber(v[10]) or 0, ok = tonumber(v[5]) ~= nil and v[6] ~= nil}
  lv.ok = lv.ok and lv.a ~= nil and lv.r ~= nil and lv.s ~= nil and lv.q ~= nil
  lv.q0 = lv.q
  cache[key] = lv
  order[#order + 1] = key
  return lv
end

local function inflight(sku)
  local n = held[sku]
  if n == nil then
    n = tonumber(redis.call('HGET', INFLIGHT, sku) or '0') or 0
    held[sku] = n
  end
  return n
end

local function emit_event(e)
  events[#events + 1] = tostring(#events / 2)
  events[#events + 1] = event(e)
end

-- check reads and checks the lines whose keys start at KEYS[k0] (stock hash, counters)
-- and values at ARGV[a0] (sku, qty), for user; it returns the lines (levels, quantity,
-- counters key if counted), or a refusal.
local function check(KEYS, ARGV, k0, a0, n, currency, user)
  local lvs, short, busy = {}, nil, false
  for i = 1, n do
    local key, sku, q = KEYS[k0 + 2 * (i - 1)], ARGV[a0 + 2 * (i - 1)], tonumber(ARGV[a0 + 2 * (i - 1) + 1])
    local lv = stock(key, sku)
    if not lv then return nil, {'not_found', sku} end
    if not lv.ok then return nil, {'corrupt', sku} end
    if (lv.ss > 0 and now < lv.ss) or (lv.se > 0 and now >= lv.se) then return nil, {'window', sku} end
    if lv.w > 0 then return nil, {'pass', sku} end
    if currency and currency ~= '' and currency ~= lv.c then return nil, {'currency', sku} end
    currency = lv.c
    local bk = false
    if lv.l > 0 then
      bk = KEYS[k0 + 2 * (i - 1) + 1]
      local already = tonumber(redis.call('HGET', bk, user) or '0') or 0
      if already + q > lv.l then return nil, {'limit', sku, lv.l, already, q} end
    end
    if lv.a < q then
      if lv.a + inflight(sku) >= q then
        busy = true
      else
        short = short or {'oos'}
        short[#short + 1] = sku; short[#short + 1] = q; short[#short + 1] = lv.a
      end
    end
    lvs[i] = {lv = lv, qty = q, bk = bk}
  end
  if short then return nil, short end
  if busy then return nil, {'busy'} end
  return lvs, currency
end

-- lines_of formats checked lines, counting those under a per-user limit against user.
local function lines_of(lvs, user)
  local l = {}
  for i, x in ipairs(lvs) do
    l[i] = x.lv.sku .. ':' .. x.qty .. ':' .. x.lv.p
    if x.bk then
      l[i] = l[i] .. ':L'
      redis.call('HINCRBY', x.bk, user, x.qty)
    end
  end
  return table.concat(l, ',')
end

-- move applies da, dr, ds times each line's quantity to the cached levels, and dx times
-- it to the in-flight counts; it returns the movements.
local function move(lvs, da, dr, ds, dx)
  local m = {}
  if dx ~= 0 then
    for _, x in ipairs(lvs) do inflight(x.lv.sku) end -- every read before the first change
  end
  for i, x in ipairs(lvs) do
    local lv, q = x.lv, x.qty
    lv.a, lv.r, lv.s, lv.q = lv.a + da * q, lv.r + dr * q, lv.s + ds * q, lv.q + 1
    if dx ~= 0 then
      local n = inflight(lv.sku)
      if heldMoved[lv.sku] == nil then heldMoved[#heldMoved + 1] = lv.sku; heldMoved[lv.sku] = true end
      held[lv.sku] = n + dx * q
    end
    m[i] = lv.sku .. ':' .. lv.q .. ':' .. (da * q) .. ':' .. (dr * q) .. ':' .. (ds * q)
  end
  return table.concat(m, ',')
end

-- step runs one step, whose keys and values are KEYS and ARGV.
local function step(KEYS, ARGV)
  local op = ARGV[1]
  if op == 'resolve' then
    local d = redis.call('GET', KEYS[1])
    if d then
      -- Written again, so that the WAIT behind this call covers it: what the caller does
      -- next (commit or abort elsewhere) must not rest on a decision a failover can lose.
      redis.call('SET', KEYS[1], d, 'KEEPTTL')
      return {d}
    end
    redis.call('SET', KEYS[1], 'a', 'EX', ARGV[3])
    return {'a'}
  end

  if op == 'reserve' then
    local st = redis.call('HGET', KEYS[1], 'st')
    if st then return {'state', st} end
    local user = ARGV[7]
    local lvs, cur = check(KEYS, ARGV, 2, 8, (#ARGV - 7) / 2, nil, user)
    if not lvs then return cur end
    local lines = lines_of(lvs, user)
    local exp = now + tonumber(ARGV[5])
    redis.call('HSET', KEYS[1], 'st', 'h', 'p', ARGV[3], 'o', ARGV[4], 'l', lines, 'x', exp, 'u', user)
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) + 1000 * tonumber(ARGV[6]))
    redis.call('ZADD', ATTEMPTS, exp, ARGV[2])
    local moves = move(lvs, -1, 1, 0, 1)
    emit_event({kind = 'xreserve', id = ARGV[2], ts = now_s, currency = cur, lines = lines, moves = moves})
    return {'ok', cur, lines}
  end

  if op == 'commit' or op == 'abort' then
    local v = redis.call('HMGET', KEYS[1], 'st', 'l', 'o', 'u')
    local st = v[1]
    if st == 'c' then return {'committed'} end
    if st == 'a' then return {'aborted'} end
    if not st then
      if op == 'commit' then return {'nohold'} end
      redis.call('HSET', KEYS[1], 'st', 'a')
      redis.call('EXPIRE', KEYS[1], ARGV[3])
      redis.call('ZREM', ATTEMPTS, ARGV[2])
      return {'aborted'}
    end
    local parsed = parse_lines(v[2])
    if 2 * #parsed ~= #KEYS - 1 then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
    local lvs = {}
    for i, l in ipairs(parsed) do
      if ARGV[3 + i] ~= l[1] then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
      local lv = stock(KEYS[2 * i], l[1])
      if not lv or not lv.ok then return {'error', 'xcart: the stock record of ' .. l[1] .. ' is gone or corrupt'} end
      lvs[i] = {lv = lv, qty = l[2], bk = l[4] and KEYS[2 * i + 1]}
    end
    local moves, kind, res
    if op == 'commit' then
      kind, res = 'xcommit', 'committed'
      redis.call('HSET', KEYS[1], 'st', 'c')
    else
      kind, res = 'xabort', 'aborted'
      redis.call('HSET', KEYS[1], 'st', 'a')
      for _, x in ipairs(lvs) do
        if x.bk and v[4] then give_back(x.bk, v[4], x.qty) end
      end
    end
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('ZREM', ATTEMPTS, ARGV[2])
    if op == 'commit' then moves = move(lvs, 0, -1, 1, -1) else moves = move(lvs, 1, -1, 0, -1) end
    emit_event({kind = kind, id = ARGV[2], ts = now_s, lines = v[2], moves = moves, reason = v[3]})
    return {res}
  end

  if op == 'decide' then
    local d = redis.call('GET', KEYS[1])
    if d then
      redis.call('SET', KEYS[1], d, 'KEEPTTL') -- covered by this call's WAIT, as in resolve
      return {'decided', d}
    end
    local ttl = ARGV[6]
    local rec = redis.call('GET', KEYS[2])
    if rec then
      redis.call('SET', KEYS[1], 'a', 'EX', ttl)
      local fp = select(6, parse_order(rec))
      if fp ~= ARGV[5] and fp ~= '*' then return {'reused'} end
      return {'replay'}
    end
    local limit = tonumber(ARGV[7])
    if limit > 0 then
      local wait = over_rate(KEYS[3], limit)
      if wait then
        redis.call('SET', KEYS[1], 'a', 'EX', ttl)
        return {'rate_limited', wait}
      end
    end
    local lvs, cur = check(KEYS, ARGV, 4, 10, (#ARGV - 9) / 2, ARGV[8], ARGV[4])
    if not lvs then
      redis.call('SET', KEYS[1], 'a', 'EX', ttl)
      return cur
    end
    local lines = lines_of(lvs, ARGV[4])
    local all = lines
    if ARGV[9] ~= '' then all = lines .. ',' .. ARGV[9] end
    redis.call('SET', KEYS[2], order_record('confirmed', now_s, cur, '', all, ARGV[5], ARGV[4]))
    redis.call('SET', KEYS[1], 'c', 'EX', ttl)
    local moves = move(lvs, -1, 0, 1, 0)
    emit_event({kind = 'order', id = ARGV[3], user = ARGV[4], ts = now_s, currency = cur, lines = all, moves = moves})
    return {'ok', now_s, cur, all}
  end

  if op == 'confirm' then
    -- An order a retry is about to answer with: written again so that the WAIT behind
    -- this call covers it (the decide that made it may have been answered "unknown").
    local v = redis.call('GET', KEYS[1])
    if not v then return {'none'} end
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    return {'ok', v}
  end

  return {'error', 'xcart: unknown step ' .. tostring(op)}
end

local out, k, a = {}, 4, 1
while a <= #ARGV do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local keys, argv = {}, {}
  for i = 1, nk do keys[i] = KEYS[k + i - 1] end
  for i = 1, na do argv[i] = ARGV[a + 1 + i] end
  -- A step that fails (a corrupt record: WRONGTYPE, a counter that is not a number)
  -- answers an error of its own; the others still apply. Each step makes its own writes
  -- before it moves the cached levels, so a failed step moves no units.
  local ok, r = pcall(step, keys, argv)
  if not ok then r = {'error', type(r) == 'table' and r.err or tostring(r)} end
  out[#out + 1] = #r
  for i = 1, #r do out[#out + 1] = r[i] end
  k, a = k + nk, a + 2 + na
end

-- The batch's writes: each moved stock hash once, the in-flight counts, one outbox entry.
local moved = {}
for _, key in ipairs(order) do
  local lv = cache[key]
  if lv.q ~= lv.q0 then
    redis.call('HSET', key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
    moved[#moved + 1] = level_of(lv.sku, lv)
  end
end
for _, sku in ipairs(heldMoved) do
  local n = held[sku]
  if n > 0 then redis.call('HSET', INFLIGHT, sku, n) else redis.call('HDEL', INFLIGHT, sku) end
end
if #events > 0 then
  events[#events + 1] = 'L'
  events[#events + 1] = table.concat(moved, ',')
  redis.call('XADD', OUTBOX, '*', unpack(events))
end
return out

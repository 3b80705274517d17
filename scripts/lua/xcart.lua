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
-- attempt" (busy: wait) from "sold out" (refuse). Each step that moves units appends an
-- outbox event of its own (xreserve, xcommit, xabort) with its movements, so every
-- partition's movements reach MongoDB keyed by (SKU, sequence).
--
-- A call is a batch of steps, of any attempts, applied in order, each atomically: ARGV
-- holds, per step, its number of keys, its number of values, then its values; KEYS holds
-- the steps' keys one after the other. The answer holds, per step, its number of values,
-- then its values; a step that fails answers 'error', message. Below, KEYS and ARGV
-- are one step's own. Its ARGV[1] names it:
--
-- reserve  KEYS outbox, attempt record, attempts index, in-flight hash, stock hash per line
--          ARGV 'reserve', T, primary partition, order id, ttl ms, tombstone ttl s,
--               then sku, qty per line
--          -> 'ok', currency, lines | 'state', st ('h' | 'c' | 'a': the attempt existed)
--             | 'busy' | 'oos', sku, qty, available, ... | 'not_found'|'corrupt'|'window'|
--               'pass'|'currency'|'limit', sku
-- commit   KEYS outbox, attempt record, attempts index, in-flight hash, stock hash per line
--          ARGV 'commit', T, tombstone ttl s, then the SKUs of the record's lines in order
--          -> 'committed' | 'aborted' | 'nohold'
-- abort    the keys and values of commit; a missing record becomes an aborted tombstone
--          -> 'aborted' | 'committed'
-- decide   KEYS outbox, decision, order record, in-flight hash, rate-limit window,
--               stock hash per line of the primary
--          ARGV 'decide', T, order id, user, fingerprint, decision ttl s, rate limit,
--               other partitions' currency, other partitions' lines, then sku, qty per line
--          -> 'ok', ts, currency, lines | 'decided', 'c'|'a' | 'replay' | 'reused'
--             | 'rate_limited', ms | the refusals of reserve
-- resolve  KEYS decision   ARGV 'resolve', T, decision ttl s   -> 'c' | 'a'

local now = now_ms()

-- check reads and checks the lines starting at KEYS[k0], ARGV[a0]; it returns the
-- levels, or a refusal.
local function check(KEYS, ARGV, k0, a0, n, currency, inflight)
  local lvs, short, busy = {}, nil, false
  for i = 1, n do
    local key, sku, q = KEYS[k0 + i - 1], ARGV[a0 + 2 * (i - 1)], tonumber(ARGV[a0 + 2 * (i - 1) + 1])
    local v = redis.call('HMGET', key, 'a', 'r', 's', 'q', 'p', 'c', 'l', 'ss', 'se', 'w')
    if not v[1] then return nil, {'not_found', sku} end
    local lv = {sku = sku, qty = q, a = tonumber(v[1]), r = tonumber(v[2]), s = tonumber(v[3]), q = tonumber(v[4]),
                p = v[5], c = v[6], key = key}
    if not (lv.a and lv.r and lv.s and lv.q and tonumber(v[5]) and v[6]) then return nil, {'corrupt', sku} end
    local ss, se = tonumber(v[8]) or 0, tonumber(v[9]) or 0
    if (ss > 0 and now < ss) or (se > 0 and now >= se) then return nil, {'window', sku} end
    if (tonumber(v[10]) or 0) > 0 then return nil, {'pass', sku} end
    if (tonumber(v[7]) or 0) > 0 then return nil, {'limit', sku} end
    if currency and currency ~= '' and currency ~= lv.c then return nil, {'currency', sku} end
    currency = lv.c
    if lv.a < q then
      if lv.a + tonumber(redis.call('HGET', inflight, sku) or '0') >= q then
        busy = true
      else
        short = short or {'oos'}
        short[#short + 1] = sku; short[#short + 1] = q; short[#short + 1] = lv.a
      end
    end
    lvs[i] = lv
  end
  if short then return nil, short end
  if busy then return nil, {'busy'} end
  return lvs, currency
end

local function lines_of(lvs)
  local l = {}
  for i, lv in ipairs(lvs) do l[i] = lv.sku .. ':' .. lv.qty .. ':' .. lv.p end
  return table.concat(l, ',')
end

-- move applies da, dr, ds times each line's quantity; it returns the moves and levels.
local function move(lvs, da, dr, ds, inflight, dx)
  local m, lvl = {}, {}
  for i, lv in ipairs(lvs) do
    local q = lv.qty
    lv.a, lv.r, lv.s, lv.q = lv.a + da * q, lv.r + dr * q, lv.s + ds * q, lv.q + 1
    redis.call('HSET', lv.key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
    if dx ~= 0 then
      if redis.call('HINCRBY', inflight, lv.sku, dx * q) <= 0 then redis.call('HDEL', inflight, lv.sku) end
    end
    m[i] = lv.sku .. ':' .. lv.q .. ':' .. (da * q) .. ':' .. (dr * q) .. ':' .. (ds * q)
    lvl[i] = level_of(lv.sku, lv)
  end
  return table.concat(m, ','), table.concat(lvl, ',')
end

-- step runs one step, whose keys and values are KEYS and ARGV.
local function step(KEYS, ARGV)
  local op = ARGV[1]
  if op == 'resolve' then
    local d = redis.call('GET', KEYS[1])
    if d then return {d} end
    redis.call('SET', KEYS[1], 'a', 'EX', ARGV[3])
    return {'a'}
  end

  if op == 'reserve' then
    local st = redis.call('HGET', KEYS[2], 'st')
    if st then return {'state', st} end
    local n = (#ARGV - 6) / 2
    local lvs, cur = check(KEYS, ARGV, 5, 7, n, nil, KEYS[4])
    if not lvs then return cur end
    local lines = lines_of(lvs)
    local moves, levels = move(lvs, -1, 1, 0, KEYS[4], 1)
    local exp = now + tonumber(ARGV[5])
    redis.call('HSET', KEYS[2], 'st', 'h', 'p', ARGV[3], 'o', ARGV[4], 'l', lines, 'x', exp)
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]) + 1000 * tonumber(ARGV[6]))
    redis.call('ZADD', KEYS[3], exp, ARGV[2])
    emit(KEYS[1], {kind = 'xreserve', id = ARGV[2], ts = tostring(now), currency = cur, lines = lines, moves = moves}, levels)
    return {'ok', cur, lines}
  end

  if op == 'commit' or op == 'abort' then
    local v = redis.call('HMGET', KEYS[2], 'st', 'l', 'o')
    local st = v[1]
    if st == 'c' then return {'committed'} end
    if st == 'a' then return {'aborted'} end
    if not st then
      if op == 'commit' then return {'nohold'} end
      redis.call('HSET', KEYS[2], 'st', 'a')
      redis.call('EXPIRE', KEYS[2], ARGV[3])
      redis.call('ZREM', KEYS[3], ARGV[2])
      return {'aborted'}
    end
    local parsed = parse_lines(v[2])
    if #parsed ~= #KEYS - 4 then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
    local lvs = {}
    for i, l in ipairs(parsed) do
      if ARGV[3 + i] ~= l[1] then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
      local x = redis.call('HMGET', KEYS[4 + i], 'a', 'r', 's', 'q', 'p')
      lvs[i] = {sku = l[1], qty = l[2], a = tonumber(x[1]) or 0, r = tonumber(x[2]) or 0, s = tonumber(x[3]) or 0,
                q = tonumber(x[4]) or 0, key = KEYS[4 + i]}
    end
    local moves, levels, kind, res
    if op == 'commit' then
      moves, levels = move(lvs, 0, -1, 1, KEYS[4], -1)
      kind, res = 'xcommit', 'committed'
      redis.call('HSET', KEYS[2], 'st', 'c')
    else
      moves, levels = move(lvs, 1, -1, 0, KEYS[4], -1)
      kind, res = 'xabort', 'aborted'
      redis.call('HSET', KEYS[2], 'st', 'a')
    end
    redis.call('EXPIRE', KEYS[2], ARGV[3])
    redis.call('ZREM', KEYS[3], ARGV[2])
    emit(KEYS[1], {kind = kind, id = ARGV[2], ts = tostring(now), lines = v[2], moves = moves, reason = v[3]}, levels)
    return {res}
  end

  if op == 'decide' then
    local d = redis.call('GET', KEYS[2])
    if d then return {'decided', d} end
    local ttl = ARGV[6]
    local rec = redis.call('GET', KEYS[3])
    if rec then
      redis.call('SET', KEYS[2], 'a', 'EX', ttl)
      local fp = select(6, parse_order(rec))
      if fp ~= ARGV[5] and fp ~= '*' then return {'reused'} end
      return {'replay'}
    end
    local limit = tonumber(ARGV[7])
    if limit > 0 then
      local wait = over_rate(KEYS[5], limit)
      if wait then
        redis.call('SET', KEYS[2], 'a', 'EX', ttl)
        return {'rate_limited', wait}
      end
    end
    local n = (#ARGV - 9) / 2
    local lvs, cur = check(KEYS, ARGV, 6, 10, n, ARGV[8], KEYS[4])
    if not lvs then
      redis.call('SET', KEYS[2], 'a', 'EX', ttl)
      return cur
    end
    local lines = lines_of(lvs)
    local moves, levels = move(lvs, -1, 0, 1, KEYS[4], 0)
    local all = lines
    if ARGV[9] ~= '' then all = lines .. ',' .. ARGV[9] end
    local ts = tostring(now)
    redis.call('SET', KEYS[3], order_record('confirmed', ts, cur, '', all, ARGV[5], ARGV[4]))
    redis.call('SET', KEYS[2], 'c', 'EX', ttl)
    emit(KEYS[1], {kind = 'order', id = ARGV[3], user = ARGV[4], ts = ts, currency = cur, lines = all, moves = moves}, levels)
    return {'ok', ts, cur, all}
  end

  return {'error', 'xcart: unknown step ' .. tostring(op)}
end

local out, k, a = {}, 1, 1
while a <= #ARGV do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local keys, argv = {}, {}
  for i = 1, nk do keys[i] = KEYS[k + i - 1] end
  for i = 1, na do argv[i] = ARGV[a + 1 + i] end
  local r = step(keys, argv)
  out[#out + 1] = #r
  for i = 1, #r do out[#out + 1] = r[i] end
  k, a = k + nk, a + 2 + na
end
return out

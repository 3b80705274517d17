-- xcart.lua: the steps of a cross-partition checkout (a cart whose SKUs live in several
-- partitions), one partition per call. The protocol (docs/ARCHITECTURE.md, "Partitions
-- on Redis Cluster"): the coordinator reserves the lines of every secondary partition
-- (reserve), then decides at the primary partition (decide: the commit point, which also
-- sells the primary's own lines and writes the order and its one outbox event), then
-- commits (commit) or releases (abort) the reservations. The decision for attempt T is
-- recorded once at the primary and never changes; resolve reads it, and makes it
-- 'aborted' if there is none yet (presumed abort), so a decide that arrives later fails.
-- A reservation that ends, committed or aborted, leaves a tombstone, so a late or
-- duplicate reserve of an ended attempt takes nothing. Every step is idempotent.
--
-- Units reserved here move available -> reserved (the stock hash's r) and are counted in
-- the partition's in-flight hash (SKU -> units), which tells "held by an in-flight
-- attempt" (busy: wait) from "sold out" (refuse). Each step that moves units makes an
-- outbox event of its own (xreserve, xcommit, xabort; decide's 'order') with its
-- movements, so every partition's movements reach MongoDB keyed by (SKU, sequence).
--
-- A call is a batch of steps, of any attempts, applied in order, each atomically, as
-- take.lua does: each step sees what its predecessors left. A redis.call costs 0.6 us
-- in isolation (BenchmarkRedisLua) and about 2 us under load, whatever it does, so the
-- batch makes a fixed number of them, not a few per step:
-- the records every step reads come in one MGET and one ZMSCORE per set; stock levels
-- and in-flight counts are read once; every step's writes are kept here and made at the
-- end (records in one MSET and one DEL, index and tombstone entries in one ZADD or ZREM
-- per set, each moved stock hash once, the batch's events as one outbox entry: fields
-- 0, 1, ... and L, the levels after the batch). What concerns SKUs with a per-user
-- limit or a waiting room (counters, passes), the rate limit, and the writes behind
-- answers from found records are written at once, each after all of its step's reads.
--
-- The records:
--   attempt record  xa:T at each secondary, while the reservation is held: a string
--                   "h\n<primary>\n<order id>\n<expiry ms>\n<lines>\n<passes>\n<user>"
--                   (passes: the waiting-room passes the reserve spent, "sku=expiry,..."),
--                   deleted when the reservation ends (no TTL: the attempts index keeps it
--                   until the sweeper ends it)
--   attempts index  sorted set, T by expiry: the sweeper's work list
--   ended           sorted set at each secondary, 'c:T' (committed) or 'a:T' (aborted) by
--                   the time it ended: the tombstones, kept ARGV[1] seconds
--   decisions       sorted set at the primary, 'a:T' by the time T was decided aborted,
--                   kept ARGV[1] seconds. The commit decision is the order record, which
--                   names the attempt that made it (format 3): it lasts as long as the
--                   order, so a reservation whose partition was out of reach for longer
--                   than the decisions are kept is still committed, not presumed aborted
-- Records of the previous format (attempt records as hashes, decisions as keys xd:T)
-- are still read, and so are 'c:T' entries of the decisions set, so that an upgrade in
-- the middle of a sale loses no attempt.
--
-- KEYS[1..5] are the partition's outbox, in-flight hash, attempts index, ended set and
-- decisions set; ARGV[1] how long tombstones and decisions are kept (s). Then each
-- step's own keys, one step after the other, and in ARGV, per step, its number of keys,
-- its number of values, then its values. The answer holds, per step, its number of
-- values, then its values; a step that fails answers 'error', message. Below, KEYS and
-- ARGV are one step's own; its ARGV[1] names it:
--
-- reserve  KEYS attempt record, then per line its stock hash, per-user counters,
--               waiting-room passes and passes held by reservations (user -> order id)
--          ARGV 'reserve', T, primary partition, order id, ttl ms, user, queue pass
--               tokens (',' joined, '' none), then sku, qty per line
--          -> 'ok', currency, lines, SKUs whose pass it spent (',')
--             | 'state', st ('h' | 'c' | 'a': the attempt existed)
--             | 'busy' | 'oos', sku, qty, available, ... | 'not_found'|'corrupt'|'window'|
--               'pass'|'currency', sku | 'limit', sku, limit, already, requested
-- commit   KEYS attempt record, then per line the four keys of reserve
--          ARGV 'commit', T, then the SKUs of the record's lines in order
--          -> 'committed' | 'aborted' | 'nohold'
-- abort    the keys and values of commit; gives back the passes the reserve spent; a
--          reservation that does not exist becomes an aborted tombstone
--          -> 'aborted' | 'committed'
-- decide   KEYS order record, rate-limit window, then per line of the primary its stock
--               hash and the other three keys of reserve's lines
--          ARGV 'decide', T, order id, user, fingerprint, rate limit, other partitions'
--               currency, other partitions' lines, queue pass tokens, then sku, qty per
--               line
--          -> 'ok', ts, currency, lines, SKUs whose pass it spent
--             | 'decided', 'c'|'a' | 'replay' | 'reused'
--             | 'rate_limited', ms | the refusals of reserve
-- resolve  KEYS the previous format's decision key, the order record
--          ARGV 'resolve', T, legacy (1: the attempt was made by the previous format,
--               whose decide reads that key), its ttl s
--          -> 'c' (the order record names T) | 'a'
-- confirm  KEYS order record   ARGV 'confirm'   -> 'ok', record | 'none'
--
-- A step that answers from a record it finds (a decision, an order) writes it again:
-- WAIT covers only what the connection wrote, so otherwise an answer could rest on a
-- write a failover loses.
--
-- Units of a SKU with a per-user limit count against the buyer's counter when reserved
-- (or sold, at the primary), as take.lua counts them, and their line is marked ':L';
-- an abort gives them back, so does a cancel. A line of a SKU whose waiting room is
-- enabled needs the buyer's pass, checked as take.lua checks it (at the primary after
-- the rate limit, which counts the request first) and spent by the step that takes the
-- units: decide at the primary, or a reserve, which also marks it held by the order
-- until the reservation ends (commit: spent for good; abort: given back), so that a
-- retry with the idempotency key meanwhile waits ('busy') instead of being refused.
--
-- A step that fails (a corrupt record: WRONGTYPE, a counter that is not a number)
-- answers an error of its own and the others still apply: each step does all its reads
-- before it changes anything kept here.

local OUTBOX, INFLIGHT, ATTEMPTS, ENDED, DECISIONS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local KEEP = 1000 * tonumber(ARGV[1])
local now = now_ms()
local now_s = tostring(now)

-- The steps, as {keys, argv, 'c:T', 'a:T'} (T the step's attempt: the names of its
-- entries in the ended or decisions set, made once).
local steps = {}
do
  local k, a = 6, 2
  while a <= #ARGV do
    local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local keys, argv = {}, {}
    for i = 1, nk do keys[i] = KEYS[k + i - 1] end
    for i = 1, na do argv[i] = ARGV[a + 1 + i] end
    steps[#steps + 1] = {keys, argv}
    k, a = k + nk, a + 2 + na
  end
end

-- What the batch reads once. str: string records (false: none, or not a string);
-- ended and decided: the members of the ended and decisions sets that exist.
local str, ended, decided = {}, {}, {}
do
  local skeys, seen, emembers, dmembers = {}, {}, {}, {}
  local function want(key)
    if not seen[key] then seen[key] = true; skeys[#skeys + 1] = key end
  end
  for _, s in ipairs(steps) do
    local keys, argv = s[1], s[2]
    local op, t = argv[1], argv[2]
    if op ~= 'confirm' then s[3], s[4] = 'c:' .. t, 'a:' .. t end
    if op == 'reserve' then
      want(keys[1])
      emembers[#emembers + 1] = s[3]; emembers[#emembers + 1] = s[4]
    elseif op == 'commit' or op == 'abort' then
      want(keys[1]) -- its tombstone is looked for only if it has no record (attempt)
    elseif op == 'decide' or op == 'resolve' then
      want(keys[1])
      if op == 'resolve' then want(keys[2]) end
      dmembers[#dmembers + 1] = s[3]; dmembers[#dmembers + 1] = s[4]
    elseif op == 'confirm' then
      want(keys[1])
    end
  end
  if #skeys > 0 then
    local v = redis.call('MGET', unpack(skeys))
    for i, key in ipairs(skeys) do str[key] = v[i] or false end
  end
  local function members(set, ms, into)
    if #ms == 0 then return end
    local v = redis.call('ZMSCORE', set, unpack(ms))
    for i, m in ipairs(ms) do if v[i] then into[m] = true end end
  end
  members(ENDED, emembers, ended)
  members(DECISIONS, dmembers, decided)
end

-- What the batch writes at the end, in the order first written.
local strw, strorder = {}, {}  -- string records: key -> value, or false to delete
local attw, attorder = {}, {}  -- attempts index: T -> expiry, or false to remove
local endadd, decadd = {}, {}  -- new members of the ended and decisions sets
local cache, order = {}, {}    -- stock key -> levels, and the keys in first-seen order
local held = {}                -- sku -> units in flight (read once, then kept here)
local heldMoved = {}           -- the SKUs whose in-flight count this batch changed, in order
local events = {}              -- the batch's outbox entry: '0', event, '1', event, ...
local spent = {}               -- passes key .. '\n' .. user -> true: passes this batch spent

local function set_str(key, v)
  if strw[key] == nil then strorder[#strorder + 1] = key end
  strw[key] = v
  str[key] = v
end

local function index(t, exp)
  if attw[t] == nil then attorder[#attorder + 1] = t end
  attw[t] = exp
end

-- end_attempt ends the reservation of attempt t here with tombstone m ('c:T' or
-- 'a:T'): its record deleted (key, if any), its index entry removed.
local function end_attempt(t, m, key)
  if key then set_str(key, false) end
  index(t, false)
  ended[m] = true
  endadd[#endadd + 1] = now_s; endadd[#endadd + 1] = m
end

-- decide_as records abort decision m ('a:T'; a commit decision is the order record).
local function decide_as(m)
  decided[m] = true
  decadd[#decadd + 1] = now_s; decadd[#decadd + 1] = m
end

-- decision returns the decision ('c', 'a' or nil) the decisions set holds for the
-- attempt whose entries there would be mc and ma ('c:T' only from an earlier format);
-- one found is written again (its score moved on), so that the WAIT behind this call
-- covers it.
local function decision(mc, ma)
  local m, d = mc, 'c'
  if not decided[mc] then m, d = ma, 'a' end
  if not decided[m] then return nil end
  redis.call('ZINCRBY', DECISIONS, 1, m)
  return d
end

-- stock reads a stock hash once per batch (nil if it does not exist); later steps see
-- earlier ones' moves.
local function stock(key, sku)
  local lv = cache[key]
  if lv ~= nil then return lv or nil end
  local v = redis.call('HMGET', key, 'a', 'r', 's', 'q', 'p', 'c', 'l', 'ss', 'se', 'w', 'wk')
  if not v[1] then
    cache[key] = false
    return nil
  end
  lv = {sku = sku, key = key, a = tonumber(v[1]), r = tonumber(v[2]), s = tonumber(v[3]), q = tonumber(v[4]),
        p = v[5], c = v[6], l = tonumber(v[7]) or 0, ss = tonumber(v[8]) or 0, se = tonumber(v[9]) or 0,
        w = tonumber(v[10]) or 0, wk = v[11] or '', ok = tonumber(v[5]) ~= nil and v[6] ~= nil}
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

-- emit_event adds an event (prelude's event format, without its table: a batch makes
-- one per step) to the batch's outbox entry.
local function emit_event(kind, id, user, currency, lines, moves, reason)
  events[#events + 1] = #events / 2
  events[#events + 1] = '2\n' .. kind .. '\n' .. id .. '\n' .. user .. '\n' .. now_s .. '\n' .. currency .. '\n' ..
    lines .. '\n' .. moves .. '\n\n\n\n' .. reason .. '\n'
end

-- check reads and checks the lines whose keys start at KEYS[k0] (stock hash, counters,
-- waiting-room passes, passes held by reservations) and values at ARGV[a0] (sku, qty),
-- for user, who carries the queue pass tokens tokens, buying order oid; it returns the
-- lines (levels, quantity, counters key if counted, the pass it spends if the SKU's room
-- is enabled), or a refusal. A pass is checked as take.lua checks it: the user's entry
-- in the room's passes, not expired, its token sha1(secret|sku|user|expiry) among the
-- request's; one this batch spent is spent. A pass a reservation of the same order holds
-- (an earlier attempt of the same idempotency key, still in flight) answers 'busy': the
-- retry waits for that attempt's outcome instead of being refused for a pass it spent.
-- All of a step's reads are here: a counter that is not a number is an error before the
-- step writes anything.
local function check(KEYS, ARGV, k0, a0, n, currency, user, tokens, oid)
  local lvs, short, busy = {}, nil, false
  for i = 1, n do
    local k = k0 + 4 * (i - 1)
    local key, sku, qs = KEYS[k], ARGV[a0 + 2 * (i - 1)], ARGV[a0 + 2 * (i - 1) + 1]
    local q = tonumber(qs)
    local lv = stock(key, sku)
    if not lv then return nil, {'not_found', sku} end
    if not lv.ok then return nil, {'corrupt', sku} end
    if (lv.ss > 0 and now < lv.ss) or (lv.se > 0 and now >= lv.se) then return nil, {'window', sku} end
    local pass = false
    if lv.w > 0 then
      local pk, hk = KEYS[k + 2], KEYS[k + 3]
      local holder = redis.call('HGET', hk, user)
      local exp = not spent[pk .. '\n' .. user] and redis.call('ZSCORE', pk, user)
      if not exp or tonumber(exp) <= now or
          not string.find(tokens, redis.sha1hex(lv.wk .. '|' .. sku .. '|' .. user .. '|' .. exp), 1, true) then
        if holder == oid then return nil, {'busy'} end
        return nil, {'pass', sku}
      end
      pass = {pk, exp, hk}
    end
    if currency and currency ~= '' and currency ~= lv.c then return nil, {'currency', sku} end
    currency = lv.c
    local bk = false
    if lv.l > 0 then
      bk = KEYS[k + 1]
      local v = redis.call('HGET', bk, user)
      local already = tonumber(v or '0')
      if not already then error('xcart: the per-user counter of ' .. sku .. ' is not a number') end
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
    lvs[i] = {lv = lv, qty = q, qs = qs, bk = bk, pass = pass}
  end
  if short then return nil, short end
  if busy then return nil, {'busy'} end
  return lvs, currency
end

-- spend spends the passes of checked lines (a write: after the step's reads) and
-- returns them as "sku=expiry,..." (for the attempt record, so an abort can give them
-- back) and their SKUs as "sku,...". With hold (a reserve), each is marked held by
-- order oid until the reservation ends.
local function spend(lvs, user, oid, hold)
  local recs, skus = {}, {}
  for _, x in ipairs(lvs) do
    if x.pass then
      redis.call('ZREM', x.pass[1], user)
      if hold then redis.call('HSET', x.pass[3], user, oid) end
      spent[x.pass[1] .. '\n' .. user] = true
      recs[#recs + 1] = x.lv.sku .. '=' .. x.pass[2]
      skus[#skus + 1] = x.lv.sku
    end
  end
  return table.concat(recs, ','), table.concat(skus, ',')
end

-- lines_of formats checked lines, counting those under a per-user limit against user.
local function lines_of(lvs, user)
  local l = {}
  for i, x in ipairs(lvs) do
    if x.bk then
      l[i] = x.lv.sku .. ':' .. x.qs .. ':' .. x.lv.p .. ':L'
      redis.call('HINCRBY', x.bk, user, x.qs)
    else
      l[i] = x.lv.sku .. ':' .. x.qs .. ':' .. x.lv.p
    end
  end
  return table.concat(l, ',')
end

-- prefetch reads the in-flight counts of checked lines: a step that moves them calls it
-- before its first write, so that a failed read changes nothing.
local function prefetch(lvs)
  for _, x in ipairs(lvs) do inflight(x.lv.sku) end
end

-- move applies da, dr, ds (each -1, 0 or 1) times each line's quantity to the cached
-- levels, and dx times it to the in-flight counts (read by prefetch); it returns the
-- movements. Deltas are written from the quantity's string: a number made a string
-- costs Redis's Lua a formatted print.
local function move(lvs, da, dr, ds, dx)
  local m = {}
  for i, x in ipairs(lvs) do
    local lv, q, qs = x.lv, x.qty, x.qs
    local neg = '-' .. qs
    lv.a, lv.r, lv.s, lv.q = lv.a + da * q, lv.r + dr * q, lv.s + ds * q, lv.q + 1
    if dx ~= 0 then
      local n = inflight(lv.sku)
      if heldMoved[lv.sku] == nil then heldMoved[#heldMoved + 1] = lv.sku; heldMoved[lv.sku] = true end
      held[lv.sku] = n + dx * q
    end
    m[i] = lv.sku .. ':' .. lv.q .. ':' .. (da < 0 and neg or da > 0 and qs or '0') .. ':' ..
      (dr < 0 and neg or dr > 0 and qs or '0') .. ':' .. (ds < 0 and neg or ds > 0 and qs or '0')
  end
  return table.concat(m, ',')
end

-- attempt reads an attempt's reservation here: its state ('h', 'c', 'a' or nil) and,
-- when held, its lines, order id and user; mc and ma name its tombstones. A reserve's
-- tombstones were read with the batch's (its record is usually missing); a commit or
-- abort (ending) usually finds its record, so its tombstones, and then a record of the
-- previous format (a hash), are looked for only when it does not: a call each, made
-- only for attempts already ended or of the previous format.
local function attempt(key, mc, ma, ending)
  local rec = str[key]
  if rec then
    local st, _, o, _, l, ps, u = string.match(rec, '^(h)\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
    if not st then -- written before records kept the passes they spent (none)
      st, _, o, _, l, u = string.match(rec, '^(h)\n(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
      ps = ''
    end
    if not st then error('xcart: attempt record ' .. key .. ' does not parse') end
    return 'h', l, o, u, ps
  end
  if not ending then
    if ended[mc] then return 'c' end
    if ended[ma] then return 'a' end
    return nil
  end
  if not ended[mc] and not ended[ma] then
    local v = redis.call('ZMSCORE', ENDED, mc, ma)
    if v[1] then ended[mc] = true elseif v[2] then ended[ma] = true end
  end
  if ended[mc] then return 'c' end
  if ended[ma] then return 'a' end
  local v = redis.call('HMGET', key, 'st', 'l', 'o', 'u')
  if v[1] then return v[1], v[2], v[3], v[4], '' end
  return nil
end

-- step runs one step, whose keys and values are KEYS and ARGV; mc and ma name its
-- attempt's entries in the ended or decisions set.
local function step(KEYS, ARGV, mc, ma)
  local op = ARGV[1]

  if op == 'reserve' then
    local t = ARGV[2]
    local st = attempt(KEYS[1], mc, ma, false)
    if st then return {'state', st} end
    local user = ARGV[6]
    local lvs, cur = check(KEYS, ARGV, 2, 8, (#ARGV - 7) / 2, nil, user, ARGV[7], ARGV[4])
    if not lvs then return cur end
    prefetch(lvs)
    local passes, passSkus = spend(lvs, user, ARGV[4], true)
    local lines = lines_of(lvs, user)
    local moves = move(lvs, -1, 1, 0, 1)
    local exp = tostring(now + tonumber(ARGV[5]))
    set_str(KEYS[1], 'h\n' .. ARGV[3] .. '\n' .. ARGV[4] .. '\n' .. exp .. '\n' .. lines .. '\n' .. passes .. '\n' .. user)
    index(t, exp)
    emit_event('xreserve', t, '', cur, lines, moves, '')
    return {'ok', cur, lines, passSkus}
  end

  if op == 'commit' or op == 'abort' then
    local t = ARGV[2]
    local st, lines, o, user, passes = attempt(KEYS[1], mc, ma, true)
    if st == 'c' then return {'committed'} end
    if st == 'a' then return {'aborted'} end
    if st ~= 'h' then
      if op == 'commit' then return {'nohold'} end
      end_attempt(t, ma, nil) -- a late reserve of it will take nothing
      return {'aborted'}
    end
    -- The record's lines, "sku:qty:price[:L]", in the order of the step's keys (4 a line).
    local lvs, i = {}, 0
    for sku, qs, counted in string.gmatch(lines, '([^:,]+):(%d+):%d+(:?L?)') do
      i = i + 1
      if ARGV[2 + i] ~= sku then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
      local lv = stock(KEYS[4 * i - 2], sku)
      if not lv or not lv.ok then return {'error', 'xcart: the stock record of ' .. sku .. ' is gone or corrupt'} end
      lvs[i] = {lv = lv, qty = tonumber(qs), qs = qs, bk = counted == ':L' and KEYS[4 * i - 1], pk = KEYS[4 * i],
                hk = KEYS[4 * i + 1]}
    end
    if 4 * i ~= #KEYS - 1 then return {'error', 'xcart: the keys do not match the attempt\'s lines'} end
    -- The passes the reserve spent, by SKU.
    local given = {}
    for sku, exp in string.gmatch(passes or '', '([^=,]+)=([^,]+)') do given[sku] = exp end
    -- Every read before the first write: counters, passes and their holders.
    prefetch(lvs)
    for _, x in ipairs(lvs) do
      if op == 'abort' and x.bk and user and not tonumber(redis.call('HGET', x.bk, user) or '0') then
        return {'error', 'xcart: the per-user counter of ' .. x.lv.sku .. ' is not a number'}
      end
      if given[x.lv.sku] then
        redis.call('ZSCORE', x.pk, user)
        redis.call('HGET', x.hk, user)
      end
    end
    local moves, kind, res, m
    if op == 'commit' then
      kind, res, m = 'xcommit', 'committed', mc
      moves = move(lvs, 0, -1, 1, -1)
    else
      kind, res, m = 'xabort', 'aborted', ma
      for _, x in ipairs(lvs) do
        if x.bk and user then give_back(x.bk, user, x.qty) end
      end
      moves = move(lvs, 1, -1, 0, -1)
    end
    -- The passes: spent for good (commit) or given back, unless the buyer has a later
    -- one (abort); no longer held either way.
    for _, x in ipairs(lvs) do
      local exp = given[x.lv.sku]
      if exp and user then
        if op == 'abort' then
          redis.call('ZADD', x.pk, 'GT', exp, user)
          spent[x.pk .. '\n' .. user] = nil
        end
        redis.call('HDEL', x.hk, user)
      end
    end
    end_attempt(t, m, KEYS[1])
    emit_event(kind, t, '', '', lines, moves, o or '')
    return {res}
  end

  if op == 'decide' then
    local t = ARGV[2]
    local d = decision(mc, ma)
    if d then return {'decided', d} end
    local rec = str[KEYS[1]]
    if rec then
      local _, _, _, _, _, fp, _, by = parse_order(rec)
      if by == t then
        -- A duplicate of this very decide ran: committed. Written again, as above.
        redis.call('SET', KEYS[1], rec, 'KEEPTTL')
        return {'decided', 'c'}
      end
      decide_as(ma)
      if fp ~= ARGV[5] and fp ~= '*' then return {'reused'} end
      return {'replay'}
    end
    local limit = tonumber(ARGV[6])
    if limit > 0 then
      local wait = over_rate(KEYS[2], limit)
      if wait then
        decide_as(ma)
        return {'rate_limited', wait}
      end
    end
    local lvs, cur = check(KEYS, ARGV, 3, 10, (#ARGV - 9) / 2, ARGV[7], ARGV[4], ARGV[9], ARGV[3])
    if not lvs then
      decide_as(ma)
      return cur
    end
    local _, passSkus = spend(lvs, ARGV[4], ARGV[3], false)
    local lines = lines_of(lvs, ARGV[4])
    local moves = move(lvs, -1, 0, 1, 0)
    local all = lines
    if ARGV[8] ~= '' then all = lines .. ',' .. ARGV[8] end
    -- The order record names the attempt: it is the commit decision, kept as long as
    -- the order (no entry in the decisions set).
    set_str(KEYS[1], order_record('confirmed', now_s, cur, '', all, ARGV[5], ARGV[4], t))
    emit_event('order', ARGV[3], ARGV[4], cur, all, moves, '')
    return {'ok', now_s, cur, all, passSkus}
  end

  if op == 'resolve' then
    local d = decision(mc, ma)
    if d then return {d} end
    local old = str[KEYS[1]]
    if old then
      redis.call('SET', KEYS[1], old, 'KEEPTTL') -- covered by this call's WAIT, as above
      return {old}
    end
    local rec = str[KEYS[2]]
    if rec and select(8, parse_order(rec)) == ARGV[2] then
      redis.call('SET', KEYS[2], rec, 'KEEPTTL') -- the order this attempt made: committed
      return {'c'}
    end
    decide_as(ma)
    -- A decide of the previous format reads only its own key: it must find the abort.
    if ARGV[3] == '1' then redis.call('SET', KEYS[1], 'a', 'EX', ARGV[4]) end
    return {'a'}
  end

  if op == 'confirm' then
    -- An order a retry is about to answer with: written again so that the WAIT behind
    -- this call covers it (the decide that made it may have been answered "unknown").
    local v = str[KEYS[1]]
    if not v then return {'none'} end
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    return {'ok', v}
  end

  return {'error', 'xcart: unknown step ' .. tostring(op)}
end

local out = {}
for _, s in ipairs(steps) do
  local ok, r = pcall(step, s[1], s[2], s[3], s[4])
  if not ok then r = {'error', type(r) == 'table' and r.err or tostring(r)} end
  out[#out + 1] = #r
  for i = 1, #r do out[#out + 1] = r[i] end
end

-- The batch's writes.
local mset, del = {}, {}
for _, key in ipairs(strorder) do
  local v = strw[key]
  if v then mset[#mset + 1] = key; mset[#mset + 1] = v else del[#del + 1] = key end
end
if #mset > 0 then redis.call('MSET', unpack(mset)) end
if #del > 0 then redis.call('DEL', unpack(del)) end
local zadd, zrem = {}, {}
for _, t in ipairs(attorder) do
  local exp = attw[t]
  if exp then zadd[#zadd + 1] = exp; zadd[#zadd + 1] = t else zrem[#zrem + 1] = t end
end
if #zadd > 0 then redis.call('ZADD', ATTEMPTS, unpack(zadd)) end
if #zrem > 0 then redis.call('ZREM', ATTEMPTS, unpack(zrem)) end
for _, w in ipairs({{ENDED, endadd}, {DECISIONS, decadd}}) do
  if #w[2] > 0 then
    redis.call('ZADD', w[1], unpack(w[2]))
    redis.call('ZREMRANGEBYSCORE', w[1], '-inf', '(' .. (now - KEEP))
  end
end
local moved = {}
for _, key in ipairs(order) do
  local lv = cache[key]
  if lv.q ~= lv.q0 then
    redis.call('HSET', key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
    moved[#moved + 1] = level_of(lv.sku, lv)
  end
end
local hset, hdel = {}, {}
for _, sku in ipairs(heldMoved) do
  local n = held[sku]
  if n > 0 then hset[#hset + 1] = sku; hset[#hset + 1] = n else hdel[#hdel + 1] = sku end
end
if #hset > 0 then redis.call('HSET', INFLIGHT, unpack(hset)) end
if #hdel > 0 then redis.call('HDEL', INFLIGHT, unpack(hdel)) end
if #events > 0 then
  events[#events + 1] = 'L'
  events[#events + 1] = table.concat(moved, ',')
  redis.call('XADD', OUTBOX, '*', unpack(events))
end
return out

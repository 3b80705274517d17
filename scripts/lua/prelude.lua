-- prelude.lua: helpers prepended to every flashstock script at load time.
--
-- Conventions shared by all scripts:
--   * Every key a script touches arrives in KEYS; nothing builds key names here.
--   * A script does all of its checks before its first write (Redis does not roll back).
--   * A script answers a flat array whose first element is a status word:
--     'ok', 'replay', or an error word the Go side maps to a typed error.
--   * Stock hashes hold: a (available), r (reserved), s (sold), q (movement sequence,
--     also the compare-and-set version), p (unit price, minor units), c (currency),
--     l (per-user lifetime limit, 0 = none), ss / se (sale window, unix ms, 0 = open).
--   * Lines travel as "sku:qty:price" joined by ","; a line whose units count against
--     the SKU's per-user limit ends in ":L", so giving them back is exact even if the
--     limit changed meanwhile. Movements travel as "sku:seq:dAvailable:dReserved:dSold"
--     joined by ",".
--   * An outbox entry holds one or more events, in fields named 0, 1, 2, ... in order,
--     and field L: the levels after the entry of each SKU it moved (see level_of).
--     An event is format version 2 (see event below, and engine/event.go, which still
--     reads version 1, the same list without its version).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- parse_lines turns "A:1:100:L,B:2:50" into {{'A',1,100,true},{'B',2,50,false}}.
local function parse_lines(s)
  local out = {}
  for item in string.gmatch(s, '[^,]+') do
    local sku, qty, price, counted = string.match(item, '^([^:]+):(%d+):(%d+)(:?L?)$')
    out[#out + 1] = {sku, tonumber(qty), tonumber(price), counted == ':L'}
  end
  return out
end

-- event encodes one outbox event, format version 2: "2", then the fields
--   kind | id (order or hold) | user | ts (unix ms) | currency | lines | moves |
--   expires (unix ms, holds) | hold (the hold an order came from) | sku | reason | actor
-- newline-separated ('' where the kind has nothing to say; no field can hold a
-- newline). This list and engine/event.go's wireEvent are the one definition of the
-- layout on each side. It is one concatenation on purpose: JSON (cjson, or built piece
-- by piece, since Lua interns every string it makes) cost Redis 1-3 us more per
-- checkout, about a quarter of a checkout's Redis time (docs/BENCHMARKS.md).
local function event(e)
  return '2\n' .. e.kind .. '\n' .. (e.id or '') .. '\n' .. (e.user or '') .. '\n' .. e.ts .. '\n' ..
    (e.currency or '') .. '\n' .. (e.lines or '') .. '\n' .. (e.moves or '') .. '\n' .. (e.expires or '') ..
    '\n' .. (e.hold or '') .. '\n' .. (e.sku or '') .. '\n' .. (e.reason or '') .. '\n' .. (e.actor or '')
end

-- take_event is event for take.lua's orders and holds, without the table: the batch
-- makes one per accepted request.
local function take_event(kind, id, user, ts, currency, lines, moves, expires)
  return '2\n' .. kind .. '\n' .. id .. '\n' .. user .. '\n' .. ts .. '\n' .. currency .. '\n' .. lines ..
    '\n' .. moves .. '\n' .. expires .. '\n\n\n\n'
end

-- level_of formats a SKU's levels after an entry's movements for the entry's field L:
-- "sku:available:reserved:sold:seq". With them a reader knows every movement's levels
-- (walking back through the deltas) without reading Redis: what threshold events
-- (sold out, back in stock, low stock) are decided from.
local function level_of(sku, lv)
  return sku .. ':' .. lv.a .. ':' .. lv.r .. ':' .. lv.s .. ':' .. lv.q
end

-- emit appends one entry holding one event to the outbox stream, with L, the levels
-- after it of the SKUs it moved ("" when it moved none).
local function emit(stream, e, levels)
  redis.call('XADD', stream, '*', '0', event(e), 'L', levels or '')
end

-- over_rate admits one request against a user's allowance of `limit` requests a minute
-- and returns nil, or, when the request is over it, how many ms to wait. The window
-- slides on Redis's clock (TIME), so API hosts with skewed clocks agree: the count of
-- the last 60 s is estimated as this window's count plus the previous window's count
-- weighted by the share of it still inside the last 60 s (rounded to whole requests),
-- so no burst of twice the limit fits across a window boundary. One hash per user: s (window start ms),
-- c (count in it), p (count in the window before). A refused request is not counted.
-- Callers run it before their checks: it is the one write a script makes before them.
local function over_rate(key, limit)
  local now = now_ms()
  local win = now - now % 60000
  local v = redis.call('HMGET', key, 's', 'c', 'p')
  local s, c, p = tonumber(v[1]) or win, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if s ~= win then
    if s == win - 60000 then p = c else p = 0 end
    s, c = win, 0
  end
  local left = 60000 - (now - win) -- ms of this window still to come
  if math.floor(p * left / 60000 + 0.5) + c + 1 > limit then
    local wait
    if c + 1 <= limit then
      -- within this window, once enough of the previous one has slid out
      wait = left - (limit - c - 0.5) * 60000 / p + 1
    else
      -- in the next window, where this window's count is the one sliding out
      wait = left + math.max(0, 60000 - (limit - 0.5) * 60000 / c + 1)
    end
    return math.max(1, math.ceil(wait))
  end
  redis.call('HSET', key, 's', s, 'c', c + 1, 'p', p)
  redis.call('PEXPIRE', key, 120000)
  return nil
end

-- restocked tells the processes that keep sold-out marks (SOLDOUT_CACHE_MS) that units
-- of sku are available again, in the same atomic step that returned them. Every script
-- that can make units available receives the restock channel as its last KEYS entry
-- (it carries the partition's hash tag like every key), so no name is built here.
local function restocked(sku)
  redis.call('PUBLISH', KEYS[#KEYS], sku)
end

-- move applies one movement to a stock hash whose current levels are a, r, s, q
-- and returns the movement for the outbox. Units made available are announced.
local function move(key, sku, lv, da, dr, ds)
  lv.a = lv.a + da
  lv.r = lv.r + dr
  lv.s = lv.s + ds
  lv.q = lv.q + 1
  redis.call('HSET', key, 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
  if tonumber(da) > 0 then restocked(sku) end
  return sku .. ':' .. lv.q .. ':' .. da .. ':' .. dr .. ':' .. ds
end

-- give_back returns qty units to a user's per-user purchase counter, and removes the
-- counter once nothing is left on it (a user whose counters were forgotten, such as the
-- simulation's synthetic buyers, must not be left with a negative one).
local function give_back(key, user, qty)
  if redis.call('HINCRBY', key, user, -qty) <= 0 then redis.call('HDEL', key, user) end
end

-- levels reads a stock hash; nil when the SKU does not exist.
local function levels(key)
  local v = redis.call('HMGET', key, 'a', 'r', 's', 'q')
  if not v[1] then return nil end
  return {a = tonumber(v[1]), r = tonumber(v[2]), s = tonumber(v[3]), q = tonumber(v[4])}
end

-- An order record is one string, so writing one is a single SET: format version 2,
-- "2", then status, ts, currency, hold (the hold it was committed from, or ''), lines,
-- fp (the request's fingerprint) and user, newline-separated (user last: it is the one
-- field that may hold any printable character). A cross-partition order (xcart.lua) is
-- version 3: "3", the same fields with attempt (the cross-partition attempt that made
-- it: its commit decision, for as long as the order lives) before user. Every script
-- that rewrites a record passes its attempt on. engine/orders.go's orderRecord is the
-- same layout; both sides still read version 1, version 2's list without its version.
local function order_record(status, ts, currency, hold_id, lines, fp, user, attempt)
  if attempt and attempt ~= '' then
    return '3\n' .. status .. '\n' .. ts .. '\n' .. currency .. '\n' .. hold_id .. '\n' .. lines .. '\n' ..
      fp .. '\n' .. attempt .. '\n' .. user
  end
  return '2\n' .. status .. '\n' .. ts .. '\n' .. currency .. '\n' .. hold_id .. '\n' .. lines .. '\n' ..
    fp .. '\n' .. user
end

-- parse_order returns status, ts, currency, hold id, lines, fingerprint, user, attempt
-- ('' unless version 3).
local function parse_order(v)
  if string.sub(v, 1, 2) == '3\n' then
    local st, ts, cur, hold, lines, fp, attempt, user =
      string.match(v, '^3\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
    return st, ts, cur, hold, lines, fp, user, attempt
  end
  if string.sub(v, 1, 2) == '2\n' then v = string.sub(v, 3) end
  local st, ts, cur, hold, lines, fp, user = string.match(v, '^(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.*)$')
  return st, ts, cur, hold, lines, fp, user, ''
end

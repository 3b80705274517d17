-- settle.lua: end a hold by commit, release or expiry. Every transition is idempotent.
--
-- A hold whose expiry has passed is expired by whichever call reaches it first, so an
-- expired hold can never be committed, even before the sweep gets to it.
--
-- KEYS[1]        outbox stream
-- KEYS[2]        hold hash
-- KEYS[3]        hold expiry index (sorted set)
-- KEYS[4]        order record the commit creates (any same-slot key for release/expire)
-- KEYS[3+2i]     stock hash of line i, in the hold's line order
-- KEYS[4+2i]     per-user purchase counter hash of line i
-- ARGV[1]        mode: 'commit', 'release' or 'expire'
-- ARGV[2]        hold id
-- ARGV[3]        the hold's lines as the caller read them (guards KEYS against a stale read)
-- ARGV[4]        order id (commit)
-- KEYS[#KEYS-1]  the caller's rate-limit window (any same-slot key when ARGV[5] is 0)
-- KEYS[#KEYS]    restock channel
-- ARGV[5]        the caller's requests-per-minute limit (commit; 0 = none)
--
-- Returns one of:
--   {'ok', status, ts}              status after this call: committed, released or expired
--   {'replay', status, order_id}    the hold was already settled this way
--   {'noop', status}                expire found nothing to do
--   {'not_found'} | {'stale'} | {'committed'} | {'released'} | {'expired'}
--   {'rate_limited', wait_ms}

local mode, hold_id = ARGV[1], ARGV[2]

local h = redis.call('HMGET', KEYS[2], 'u', 'st', 'x', 'c', 'l', 'o')
if not h[1] then return {'not_found'} end
if h[5] ~= ARGV[3] then return {'stale'} end
local st = h[2]
-- A settled hold answers before the rate limit counts: a retry learning the outcome of
-- a commit whose reply was lost is not a new request.
local limit = tonumber(ARGV[5])
if st == 'active' and limit > 0 then
  local wait = over_rate(KEYS[#KEYS - 1], limit)
  if wait then return {'rate_limited', wait} end
end

if st ~= 'active' then
  if mode == 'expire' then
    redis.call('ZREM', KEYS[3], hold_id)
    return {'noop', st}
  end
  if (mode == 'commit' and st == 'committed') or (mode == 'release' and st == 'released') then
    -- Written again, so that the WAIT behind this call covers what this replay answers.
    redis.call('HSET', KEYS[2], 'st', st)
    return {'replay', st, h[6] or ''}
  end
  return {st}
end

local now = now_ms()
local due = tonumber(h[3]) <= now
if mode == 'expire' and not due then return {'noop', st} end

local lines, stock = parse_lines(h[5]), {}
for i, line in ipairs(lines) do
  stock[i] = levels(KEYS[3 + 2 * i])
  if not stock[i] then return {'not_found'} end
end

local user, moves = h[1], {}
local new
if due then new = 'expired' elseif mode == 'commit' then new = 'committed' else new = 'released' end
for i, line in ipairs(lines) do
  local sku, qty = line[1], line[2]
  if new == 'committed' then
    moves[i] = move(KEYS[3 + 2 * i], sku, stock[i], 0, -qty, qty)
  else
    moves[i] = move(KEYS[3 + 2 * i], sku, stock[i], qty, -qty, 0)
    if line[4] then give_back(KEYS[4 + 2 * i], user, qty) end
  end
end
redis.call('ZREM', KEYS[3], hold_id)
local m = table.concat(moves, ',')
local after = {}
for i, line in ipairs(lines) do after[i] = level_of(line[1], stock[i]) end
local levels_after = table.concat(after, ',')
if new == 'committed' then
  local order_id = ARGV[4]
  redis.call('HSET', KEYS[2], 'st', new, 'o', order_id)
  -- No TTL until MongoDB has the order, as for checkouts (the syncer sets it).
  redis.call('SET', KEYS[4], order_record('confirmed', now, h[4], hold_id, h[5], '', user))
  emit(KEYS[1], {kind = 'order', id = order_id, user = user, ts = tostring(now), currency = h[4],
    lines = h[5], moves = m, hold = hold_id}, levels_after)
else
  redis.call('HSET', KEYS[2], 'st', new)
  emit(KEYS[1], {kind = new == 'expired' and 'expire' or 'release', id = hold_id, user = user,
    ts = tostring(now), moves = m}, levels_after)
end
if due and mode ~= 'expire' then return {'expired'} end
return {'ok', new, now}

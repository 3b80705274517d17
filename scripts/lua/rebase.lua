-- rebase.lua: restore a SKU's levels and sequence from MongoDB's fold of its ledger, in
-- one atomic step with everything that goes with it: the movements Redis numbered again
-- after a rollback (re-recorded as one 'rebase' movement), the release of the reserved
-- units whose holds were lost ('rebuild' movement), and the order records Redis lost.
--
-- Two modes. 'restore': the SKU has no stock hash (Redis lost it); the hash is created
-- with the product's attributes. 'rebase': the SKU exists but MongoDB is ahead of it (a
-- rollback); the write happens only if its sequence is still ARGV[3] (compare-and-set on
-- the live version, so nothing that happened since it was read is overwritten).
--
-- KEYS[1]        outbox stream
-- KEYS[2]        stock hash
-- KEYS[3]        SKU index (set)
-- KEYS[4]        hold expiry index (sorted set)
-- KEYS[5..]      per restored order i: its record, then the per-user counter hash of
--                each of its lines, in the record's line order; then per settled hold
--                j: its hash, then the per-user counter hash of each of its lines
-- KEYS[#KEYS]    restock channel

-- ARGV[1]        mode: 'restore' | 'rebase'
-- ARGV[2]        sku
-- ARGV[3]        expected sequence (rebase)
-- ARGV[4..7]     available, reserved, sold, sequence of MongoDB's fold
-- ARGV[8..10]    deltas of the movements to record again (available, reserved, sold)
-- ARGV[11]       reserved units of lost holds to return to available
-- ARGV[12]       reason (recorded with the movements)
-- ARGV[13..17]   price, currency, per-user limit, sale start ms, sale end ms (restore)
-- ARGV[18]       order record TTL, seconds
-- ARGV[19]       number of orders n, then per order: the record as MongoDB has it
--                (status, ts, currency, hold id, lines, fingerprint '*', user), and
--                '1' if its counted lines are missing from the user's counters ('0'
--                when the hold it was committed from still counts them)
-- ARGV[20+2n]    number of settled holds m, then per hold: id, status (committed,
--                released, expired), order id (committed)
-- ARGV[#ARGV-1]  waiting room: admissions per minute, 0 = none (restore)
-- ARGV[#ARGV]    the room's secret (restore)
--
-- Holds: a hold Redis has as active that MongoDB's ledger settled is settled the same
-- way (no movement: the fold has it), leaving the expiry index; released or expired, its
-- counted lines go back to the user's counters.
--
-- Orders: a record Redis lacks is written (SET NX) and, if confirmed, its counted lines
-- (":L") are added to the user's counters; a record Redis has as confirmed that MongoDB
-- has as cancelled is marked cancelled and its counted lines given back. Others are left.
--
-- Returns {'ok', a, r, s, q, restoredOrders}, {'exists'} (restore: the SKU is there),
-- {'not_found'} (rebase), {'version', q} or {'negative'} (nothing is changed then).

local mode, sku = ARGV[1], ARGV[2]
local lv
if mode == 'restore' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
else
  lv = levels(KEYS[2])
  if not lv then return {'not_found'} end
  if lv.q ~= tonumber(ARGV[3]) then return {'version', lv.q} end
end
lv = {a = tonumber(ARGV[4]), r = tonumber(ARGV[5]), s = tonumber(ARGV[6]), q = tonumber(ARGV[7])}
local da, dr, ds, rel = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
if lv.a + da + rel < 0 or lv.r + dr - rel < 0 or lv.s + ds < 0 or rel < 0 then return {'negative'} end

-- Checks done; writes follow.
local now = now_ms()
if mode == 'restore' then
  redis.call('HSET', KEYS[2], 'p', ARGV[13], 'c', ARGV[14], 'l', ARGV[15], 'ss', ARGV[16], 'se', ARGV[17],
    'w', ARGV[#ARGV - 1], 'wk', ARGV[#ARGV])
  redis.call('SADD', KEYS[3], sku)
end
redis.call('HSET', KEYS[2], 'a', lv.a, 'r', lv.r, 's', lv.s, 'q', lv.q)
if da ~= 0 or dr ~= 0 or ds ~= 0 then
  local m = move(KEYS[2], sku, lv, da, dr, ds)
  emit(KEYS[1], {kind = 'rebase', ts = tostring(now), sku = sku, reason = ARGV[12], actor = 'reconcile', moves = m},
    level_of(sku, lv))
end
if rel > 0 then
  local m = move(KEYS[2], sku, lv, rel, -rel, 0)
  emit(KEYS[1], {kind = 'rebuild', ts = tostring(now), sku = sku, reason = 'holds lost with Redis data',
    actor = 'reconcile', moves = m}, level_of(sku, lv))
end
if lv.a > 0 then restocked(sku) end

local k, restored = 5, 0
for i = 1, tonumber(ARGV[19]) do
  local rec, uncounted = ARGV[18 + 2 * i], ARGV[19 + 2 * i] == '1'

  local st, ts, currency, hold_id, l, fp, user = parse_order(rec)
  local lines = parse_lines(l)
  local key = KEYS[k]
  local old = redis.call('GET', key)
  local counted, sign = lines, 0
  if not old then
    redis.call('SET', key, rec, 'EX', ARGV[18])
    restored = restored + 1
    if st == 'confirmed' and uncounted then sign = 1 end
  else
    local ost, ots, ocur, ohold, ol, ofp, ouser, oattempt = parse_order(old)
    if ost == 'confirmed' and st == 'cancelled' then
      redis.call('SET', key, order_record('cancelled', ots, ocur, ohold, ol, ofp, ouser, oattempt), 'KEEPTTL')
      counted, user, sign = parse_lines(ol), ouser, -1
    end
  end
  for j, line in ipairs(counted) do
    -- KEYS follow MongoDB's lines; Redis's own record decides what was counted.
    if sign ~= 0 and line[4] and lines[j] and lines[j][1] == line[1] then
      redis.call('HINCRBY', KEYS[k + j], user, sign * line[2])
    end
  end
  k = k + 1 + #lines
end

local a = 20 + 2 * tonumber(ARGV[19])
for j = 1, tonumber(ARGV[a]) do
  local hold_id, new, order_id = ARGV[a + 3 * j - 2], ARGV[a + 3 * j - 1], ARGV[a + 3 * j]
  local h = redis.call('HMGET', KEYS[k], 'u', 'st', 'l')
  local lines = parse_lines(h[3] or '')
  if h[2] == 'active' then
    if new == 'committed' then
      redis.call('HSET', KEYS[k], 'st', new, 'o', order_id)
    else
      redis.call('HSET', KEYS[k], 'st', new)
      for i, line in ipairs(lines) do
        if line[4] then give_back(KEYS[k + i], h[1], line[2]) end
      end
    end
    redis.call('ZREM', KEYS[4], hold_id)
  end
  k = k + 1 + #lines
end
return {'ok', lv.a, lv.r, lv.s, lv.q, restored}

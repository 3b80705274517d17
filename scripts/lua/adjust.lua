-- adjust.lua: an administrative movement: adjust by a delta, set an absolute level
-- under compare-and-set, release the holds lost with Redis's data after a rebuild, or
-- repair drift found by reconciliation.
--
-- A repair records two movements so that the ledger keeps explaining the levels: a
-- 'drift' movement for the change Redis already shows that no movement recorded (not
-- applied again), then the 'repair' movement that compensates it (applied).
--
-- Every call is safe to run twice: it carries an idempotency record, named by the
-- caller's Idempotency-Key or, without one, by an operation id the server drew for this
-- call. The record keeps the fingerprint and the levels the call produced, so a replay
-- answers the original result, not the current levels.
--
-- KEYS[1]        outbox stream
-- KEYS[2]        stock hash
-- KEYS[3]        idempotency record of (actor, key or operation id)
-- KEYS[4]        restock channel
-- ARGV[1]        kind: 'adjust' | 'rebuild' | 'repair' (ARGV[8..10] are deltas) or
--                'set' (ARGV[8] is the new available level)
-- ARGV[2]        sku
-- ARGV[3]        reason (free text, recorded in the ledger)
-- ARGV[4]        actor (who asked)
-- ARGV[5]        request fingerprint
-- ARGV[6]        idempotency record TTL, seconds
-- ARGV[7]        expected version (-1 = any)
-- ARGV[8..10]    available, reserved, sold deltas (set: ARGV[8] = new available)
-- ARGV[11]       the highest available level an adjust or set may reach
--
-- Returns {'ok', a, r, s, q}, {'replay', a, r, s, q}, {'reused'}, {'not_found'},
-- {'version', a, r, s, q}, {'insufficient', a, r, s, q} or {'too_large', a, r, s, q}.

local kind, fp = ARGV[1], ARGV[5]
local seen = redis.call('GET', KEYS[3])
if seen then
  local f, a, r, s, q = string.match(seen, '^(.-)\n(%d+)\n(%d+)\n(%d+)\n(%d+)$')
  if not f then f = seen end -- a record written before records kept their result
  if f ~= fp then return {'reused'} end
  -- Written again, so that the WAIT behind this call covers what this replay answers.
  redis.call('SET', KEYS[3], seen, 'KEEPTTL')
  if a then return {'replay', a, r, s, q} end
  local lv = levels(KEYS[2])
  if not lv then return {'not_found'} end
  return {'replay', lv.a, lv.r, lv.s, lv.q}
end
local lv = levels(KEYS[2])
if not lv then return {'not_found'} end
local expected = tonumber(ARGV[7])
if expected >= 0 and expected ~= lv.q then return {'version', lv.a, lv.r, lv.s, lv.q} end

local da, dr, ds = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if kind == 'set' then da, dr, ds = da - lv.a, 0, 0 end
if lv.a + da < 0 or lv.r + dr < 0 or lv.s + ds < 0 then
  return {'insufficient', lv.a, lv.r, lv.s, lv.q}
end
if (kind == 'adjust' or kind == 'set') and lv.a + da > tonumber(ARGV[11]) then
  return {'too_large', lv.a, lv.r, lv.s, lv.q}
end

local now = now_ms()
if kind == 'repair' then
  lv.q = lv.q + 1
  emit(KEYS[1], {kind = 'drift', ts = tostring(now), sku = ARGV[2], reason = ARGV[3], actor = ARGV[4],
    moves = ARGV[2] .. ':' .. lv.q .. ':' .. -da .. ':' .. -dr .. ':' .. -ds}, level_of(ARGV[2], lv))
end
local m = move(KEYS[2], ARGV[2], lv, da, dr, ds)
redis.call('SET', KEYS[3], fp .. '\n' .. lv.a .. '\n' .. lv.r .. '\n' .. lv.s .. '\n' .. lv.q, 'EX', ARGV[6])
emit(KEYS[1], {kind = kind, ts = tostring(now), sku = ARGV[2], reason = ARGV[3], actor = ARGV[4], moves = m},
  level_of(ARGV[2], lv))
return {'ok', lv.a, lv.r, lv.s, lv.q}

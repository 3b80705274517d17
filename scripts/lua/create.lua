-- create.lua: create a SKU's stock record. (Restoring one from the durable ledger is
-- rebase.lua's 'restore' mode, which releases lost holds in the same step.)
--
-- KEYS[1]        outbox stream
-- KEYS[2]        stock hash
-- KEYS[3]        SKU index (set)
-- KEYS[4]        restock channel
-- ARGV[1]        mode: 'create' (a new SKU; movement 1 goes to the outbox; the one mode
--                the engine uses now; 'restore' writes the levels without a movement)
-- ARGV[2]        sku
-- ARGV[3..6]     available, reserved, sold, sequence  (create: initial stock, 0, 0, 1)
-- ARGV[7..11]    price, currency, per-user limit, sale start ms, sale end ms (0 = open)
-- ARGV[12]       operation id the server drew for this call (kept in the hash as 'op'),
--                so that the same call run twice answers 'ok' and not 'exists'
-- ARGV[13]       waiting room: admissions per minute, 0 = no room (field w); absent = 0
-- ARGV[14]       the room's secret, which its passes are derived from (field wk)
--
-- Returns {'ok', ts}, {'replay'} (this very call ran already) or {'exists'} (nothing is
-- changed then).

local op = redis.call('HGET', KEYS[2], 'op')
if op then
  if op == ARGV[12] then
    -- Written again, so that the WAIT behind this call covers what this replay answers.
    redis.call('HSET', KEYS[2], 'op', op)
    return {'replay'}
  end
  return {'exists'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local now = now_ms()
redis.call('HSET', KEYS[2], 'a', ARGV[3], 'r', ARGV[4], 's', ARGV[5], 'q', ARGV[6],
  'p', ARGV[7], 'c', ARGV[8], 'l', ARGV[9], 'ss', ARGV[10], 'se', ARGV[11], 'op', ARGV[12],
  'w', ARGV[13] or 0, 'wk', ARGV[14] or '')
redis.call('SADD', KEYS[3], ARGV[2])
if tonumber(ARGV[3]) > 0 then restocked(ARGV[2]) end
if ARGV[1] == 'create' then
  emit(KEYS[1], {kind = 'create', ts = tostring(now), currency = ARGV[8], sku = ARGV[2],
    moves = ARGV[2] .. ':' .. ARGV[6] .. ':' .. ARGV[3] .. ':0:0'},
    ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. ARGV[6])
end
return {'ok', now}

-- create.lua: create a SKU's stock record, or restore one rebuilt from the durable ledger.
--
-- KEYS[1]        outbox stream
-- KEYS[2]        stock hash
-- KEYS[3]        SKU index (set)
-- ARGV[1]        mode: 'create' (a new SKU; movement 1 goes to the outbox) or
--                'restore' (levels and sequence folded from MongoDB; nothing to the outbox)
-- ARGV[2]        sku
-- ARGV[3..6]     available, reserved, sold, sequence  (create: initial stock, 0, 0, 1)
-- ARGV[7..11]    price, currency, per-user limit, sale start ms, sale end ms (0 = open)
--
-- Returns {'ok', ts} or {'exists'} (nothing is changed then).

if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local now = now_ms()
redis.call('HSET', KEYS[2], 'a', ARGV[3], 'r', ARGV[4], 's', ARGV[5], 'q', ARGV[6],
  'p', ARGV[7], 'c', ARGV[8], 'l', ARGV[9], 'ss', ARGV[10], 'se', ARGV[11])
redis.call('SADD', KEYS[3], ARGV[2])
if tonumber(ARGV[3]) > 0 then restocked(ARGV[2]) end
if ARGV[1] == 'create' then
  emit(KEYS[1], 'create', '', '', now, ARGV[8], '', ARGV[2] .. ':' .. ARGV[6] .. ':' .. ARGV[3] .. ':0:0',
    '', '', ARGV[2], '', '')
end
return {'ok', now}

-- checkout.lua: the bare handler's whole checkout, one call per request.
--
-- KEYS[1]  available units of the SKU (string counter)
-- KEYS[2]  the idempotency record of this user and key (string: the order id)
-- KEYS[3]  the outbox stream
-- ARGV[1]  quantity (a positive integer)
-- ARGV[2]  the order id to use if this is a new checkout
-- ARGV[3]  the user id
--
-- Returns {1, order id} when sold, {2, order id} when the key was used before (a
-- replay: nothing changes), {0, available} when there is not enough stock.
local done = redis.call('GET', KEYS[2])
if done then return {2, done} end
local q = tonumber(ARGV[1])
local n = redis.call('DECRBY', KEYS[1], q)
if n < 0 then
  redis.call('INCRBY', KEYS[1], q)
  return {0, n + q}
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', 86400)
redis.call('XADD', KEYS[3], '*', 'order', ARGV[2], 'user', ARGV[3], 'qty', ARGV[1])
return {1, ARGV[2]}

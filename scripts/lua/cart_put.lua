-- cart_put.lua: set or remove one line of a cart, keeping the cart to at most a number
-- of lines. The check and the write are one step: checked from Go, two concurrent adds
-- of new SKUs to a cart one line short of full would both pass and overfill it.
--
-- KEYS[1]  the cart hash (sku -> quantity)
-- ARGV[1]  sku
-- ARGV[2]  quantity (0 removes the line)
-- ARGV[3]  the most lines a cart may hold
-- ARGV[4]  the cart's lifetime, seconds (each write starts it again)
--
-- Returns 'ok', or 'full' (nothing written) when the SKU is not in the cart and the
-- cart already holds ARGV[3] lines.

local cart, sku = KEYS[1], ARGV[1]
if ARGV[2] == '0' then
  redis.call('HDEL', cart, sku)
elseif redis.call('HEXISTS', cart, sku) == 1 or redis.call('HLEN', cart) < tonumber(ARGV[3]) then
  redis.call('HSET', cart, sku, ARGV[2])
else
  return 'full'
end
redis.call('EXPIRE', cart, ARGV[4])
return 'ok'

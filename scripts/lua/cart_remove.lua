-- cart_remove.lua: take out of a cart the lines a checkout bought, each only if it
-- still holds the quantity bought. A line added or changed while the checkout ran is
-- the buyer's newer wish and stays.
--
-- KEYS[1]  the cart hash (sku -> quantity)
-- ARGV     pairs of sku, quantity bought
--
-- Returns the number of lines removed.

local cart, removed = KEYS[1], 0
for i = 1, #ARGV, 2 do
  if tonumber(redis.call('HGET', cart, ARGV[i])) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('HDEL', cart, ARGV[i])
  end
end
return removed

-- update.lua: change a SKU's sale attributes (price, currency, limit, sale window).
--
-- Levels are never touched here; those move only through movements.
--
-- KEYS[1]        stock hash
-- ARGV           field, value pairs among p, c, l, ss, se
--
-- Returns {'ok'} or {'not_found'}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
redis.call('HSET', KEYS[1], unpack(ARGV))
return {'ok'}

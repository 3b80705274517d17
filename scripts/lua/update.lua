-- update.lua: change a SKU's sale attributes (price, currency, limit, sale window) and its
-- waiting room.
--
-- Levels are never touched here; those move only through movements.
--
-- KEYS[1]        stock hash
-- KEYS[2..5]     the SKU's waiting room: state hash, waiting buyers, passes, expired
--                passes (see queue.lua)
-- ARGV[1]        room: '' (unchanged), or its admissions per minute (0 disables it)
-- ARGV[2]        a fresh secret for the room's passes, used when the room is enabled
--                from disabled
-- ARGV[3..]      field, value pairs among p, c, l, ss, se
--
-- Disabling a room discards its queue and passes (UNLINK frees them in the
-- background); enabling it again opens an empty room with a new secret.
--
-- Returns {'ok'} or {'not_found'}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
if ARGV[1] ~= '' then
  local was = tonumber(redis.call('HGET', KEYS[1], 'w') or '0') > 0
  local rate = tonumber(ARGV[1])
  if rate > 0 and not was then
    redis.call('HSET', KEYS[1], 'w', rate, 'wk', ARGV[2])
  elseif rate > 0 then
    redis.call('HSET', KEYS[1], 'w', rate)
  else
    redis.call('HSET', KEYS[1], 'w', 0)
    if was then redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) end
  end
end
return {'ok'}

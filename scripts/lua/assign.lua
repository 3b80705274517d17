-- assign.lua: record the partition a SKU lives in, unless one is recorded already, and
-- return the recorded one. Run once per creation, before the SKU's stock record is
-- made; running it again changes nothing.
--
-- KEYS[1]  the directory hash (sku -> partition number), in partition 0
-- ARGV[1]  sku
-- ARGV[2]  the partition chosen for it (by hash of its group or of the SKU)
--
-- Returns {partition}: the one recorded (ARGV[2] unless the SKU had one).
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return {redis.call('HGET', KEYS[1], ARGV[1])}

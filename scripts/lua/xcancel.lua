-- xcancel.lua: the steps of cancelling an order whose lines live in several partitions
-- (a cross-partition checkout's order), one partition per call. No script can touch two
-- slots, so the cancel runs in steps (engine/xcancel.go; docs/ARCHITECTURE.md,
-- "Partitions on Redis Cluster"):
--
--   cancel   at the order's home partition (where its record is, the cart's primary): the
--            decision. It marks the record cancelled, returns the home partition's own lines
--            sold -> available, lists the order in the partition's pending-restores index
--            (the other partitions still owe their lines) and emits the order's one 'cancel'
--            event, with the home partition's moves.
--   restore  at each other partition, keyed by the order id: returns that partition's lines
--            sold -> available once (a marker key per order and partition makes a repeat
--            restore nothing) and emits an 'xrestore' event with its moves (stock movements
--            only: the order's status comes from the 'cancel' event).
--
-- The coordinator (or the sweeper, for an order still in the pending index) runs the
-- restores after the cancel, and takes the order out of the index once every restore
-- answered. ARGV[1] names the step:
--
-- cancel   KEYS outbox, order record, pending-restores index, then per local line its stock
--               hash and its per-user counter hash, then the restock channel
--          ARGV 'cancel', order id, the order's lines as the caller read them (guards KEYS),
--               due ms (the pending entry's score: when a sweeper may re-drive the restores),
--               then the 1-based position in the record's lines of each local line, in KEYS
--               order
--          -> 'ok', ts | 'replay' (already cancelled) | 'not_found' | 'stale'
-- restore  KEYS outbox, marker, then per line its stock hash and its per-user counter hash,
--               then the restock channel
--          ARGV 'restore', order id, user, marker ttl s, then this partition's lines of the
--               order as the record has them ("sku:qty:price[:L]"), in KEYS order
--          -> 'ok', ts | 'replay' (restored already) | 'not_found', sku | 'busy', sku (fewer
--             units sold than the line's: the checkout's commit here is still to come)

local op = ARGV[1]

if op == 'cancel' then
  local rec = redis.call('GET', KEYS[2])
  if not rec then return {'not_found'} end
  local st, ts, currency, hold_id, l, fp, user, attempt = parse_order(rec)
  if l ~= ARGV[3] then return {'stale'} end
  if st == 'cancelled' then
    -- Written again, so that the WAIT behind this call covers the cancel a retry is about
    -- to answer with (and finish restores for): the first call may have been answered
    -- "unknown" for want of a replica.
    redis.call('SET', KEYS[2], rec, 'KEEPTTL')
    return {'replay'}
  end
  local all = parse_lines(l)
  local n = #ARGV - 4
  if (#KEYS - 4) ~= 2 * n then return {'stale'} end
  local lines, stock = {}, {}
  for i = 1, n do
    local line = all[tonumber(ARGV[4 + i])]
    if not line then return {'stale'} end
    lines[i] = line
    stock[i] = levels(KEYS[2 + 2 * i])
    if not stock[i] then return {'not_found'} end
  end
  local now, moves, after = now_ms(), {}, {}
  for i, line in ipairs(lines) do
    moves[i] = move(KEYS[2 + 2 * i], line[1], stock[i], line[2], 0, -line[2])
    if line[4] then give_back(KEYS[3 + 2 * i], user, line[2]) end
    after[i] = level_of(line[1], stock[i])
  end
  redis.call('SET', KEYS[2], order_record('cancelled', ts, currency, hold_id, l, fp, user, attempt), 'KEEPTTL')
  if n < #all then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2]) end
  emit(KEYS[1], {kind = 'cancel', id = ARGV[2], user = user, ts = tostring(now), moves = table.concat(moves, ',')},
    table.concat(after, ','))
  return {'ok', now}
end

if op == 'restore' then
  local done = redis.call('GET', KEYS[2])
  if done then
    -- Written again for the same reason: the caller takes the order off the pending
    -- list on this answer, so the restore must be on a replica first.
    redis.call('SET', KEYS[2], done, 'KEEPTTL')
    return {'replay'}
  end
  local n = #ARGV - 4
  if (#KEYS - 3) ~= 2 * n then return {'error', 'xcancel: the keys do not match the lines'} end
  local lines, stock = {}, {}
  for i = 1, n do
    local line = parse_lines(ARGV[4 + i])[1]
    if not line then return {'error', 'xcancel: malformed line'} end
    lines[i] = line
    stock[i] = levels(KEYS[1 + 2 * i])
    if not stock[i] then return {'not_found', line[1]} end
    -- Fewer units sold than the line's: its reservation here is not committed yet (the
    -- checkout's commit failed and waits for the sweeper). Restoring now would be right
    -- in the end (commit and restore commute) but show a negative sold meanwhile: wait.
    if stock[i].s < line[2] then return {'busy', line[1]} end
  end
  local now, moves, after, l = now_ms(), {}, {}, {}
  for i, line in ipairs(lines) do
    moves[i] = move(KEYS[1 + 2 * i], line[1], stock[i], line[2], 0, -line[2])
    if line[4] then give_back(KEYS[2 + 2 * i], ARGV[3], line[2]) end
    after[i] = level_of(line[1], stock[i])
    l[i] = ARGV[4 + i]
  end
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
  emit(KEYS[1], {kind = 'xrestore', id = ARGV[2], user = ARGV[3], ts = tostring(now), lines = table.concat(l, ','),
    moves = table.concat(moves, ',')}, table.concat(after, ','))
  return {'ok', now}
end

return {'error', 'xcancel: unknown step ' .. tostring(op)}

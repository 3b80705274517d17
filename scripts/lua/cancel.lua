-- cancel.lua: cancel a confirmed order; its units return to available exactly once.
--
-- KEYS[1]        outbox stream
-- KEYS[2]        order record
-- KEYS[1+2i]     stock hash of line i, in the order's line order
-- KEYS[2+2i]     per-user purchase counter hash of line i
-- KEYS[#KEYS]    restock channel
-- ARGV[1]        order id
-- ARGV[2]        the order's lines as the caller read them (guards KEYS against a stale read)
--
-- Returns {'ok', ts}, {'replay'} when already cancelled, {'not_found'} or {'stale'}.

local rec = redis.call('GET', KEYS[2])
if not rec then return {'not_found'} end
local st, ts, currency, hold_id, l, fp, user, attempt = parse_order(rec)
if l ~= ARGV[2] then return {'stale'} end
if st == 'cancelled' then
  -- Written again, so that the WAIT behind this call covers the cancel this answer rests
  -- on (the call that made it may have been answered "unknown").
  redis.call('SET', KEYS[2], rec, 'KEEPTTL')
  return {'replay'}
end

local lines, stock = parse_lines(l), {}
for i, line in ipairs(lines) do
  stock[i] = levels(KEYS[1 + 2 * i])
  if not stock[i] then return {'not_found'} end
end

local now, moves = now_ms(), {}
for i, line in ipairs(lines) do
  moves[i] = move(KEYS[1 + 2 * i], line[1], stock[i], line[2], 0, -line[2])
  if line[4] then give_back(KEYS[2 + 2 * i], user, line[2]) end
end
redis.call('SET', KEYS[2], order_record('cancelled', ts, currency, hold_id, l, fp, user, attempt), 'KEEPTTL')
local after = {}
for i, line in ipairs(lines) do after[i] = level_of(line[1], stock[i]) end
emit(KEYS[1], {kind = 'cancel', id = ARGV[1], user = user, ts = tostring(now), moves = table.concat(moves, ',')},
  table.concat(after, ','))
return {'ok', now}

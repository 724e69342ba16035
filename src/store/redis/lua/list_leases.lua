-- ARGV: "=" and a task id, "=" and an agent, a state (each "" for any),
-- the lease id to start after ("" for the first), limit. Replies with
-- lease JSON in id order.
--
-- Every filter is an index (by task, agent, state) holding lease ids in
-- byte order, which is id order. The smallest of the filter's indexes is
-- walked, and the others are checked by membership, so no lease is decoded.
-- Without a filter, the five state indexes together hold every lease once:
-- the first `limit` of each are merged.
local task_id, agent, state, after, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local start = '-'
if after ~= '' then start = '(' .. after end

local indexes = {}
if task_id ~= '' then table.insert(indexes, P .. 'task-leases:' .. string.sub(task_id, 2)) end
if agent ~= '' then table.insert(indexes, P .. 'agent-leases:' .. string.sub(agent, 2)) end
if state ~= '' then table.insert(indexes, state_index(state)) end

local ids = {}
if #indexes == 0 then
  for _, name in ipairs({ 'pending', 'active', 'revoking', 'revoked', 'failed' }) do
    for _, id in ipairs(redis.call('ZRANGEBYLEX', state_index(name), start, '+', 'LIMIT', 0, limit)) do
      table.insert(ids, id)
    end
  end
  table.sort(ids, id_before)
  while #ids > limit do table.remove(ids) end
else
  local sizes = {}
  for _, index in ipairs(indexes) do sizes[index] = redis.call('ZCARD', index) end
  table.sort(indexes, function(a, b) return sizes[a] < sizes[b] end)
  local walked, others = indexes[1], { unpack(indexes, 2) }
  local page = math.max(limit, 100)
  while #ids < limit do
    local batch = redis.call('ZRANGEBYLEX', walked, start, '+', 'LIMIT', 0, page)
    for _, id in ipairs(batch) do
      local wanted = true
      for _, other in ipairs(others) do
        if not redis.call('ZSCORE', other, id) then
          wanted = false
          break
        end
      end
      if wanted then
        table.insert(ids, id)
        if #ids == limit then break end
      end
    end
    if #batch < page then break end
    start = '(' .. batch[#batch]
  end
end

local leases = {}
for _, id in ipairs(ids) do
  local raw = redis.call('GET', lease_key(id))
  if not raw then
    error('writ: an index names a lease that does not exist')
  end
  table.insert(leases, raw)
end
return leases

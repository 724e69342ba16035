-- ARGV: "=" and a task id, "=" and an agent, a state (each "" for any),
-- the lease id to start after ("" for the first), limit, "=" and a
-- provider ("" for any). Replies with {id, record, ...} in id order.
--
-- Every filter is an index (by task, agent, state) holding lease ids in
-- byte order, which is id order. The smallest of the filter's indexes is
-- walked, and each lease found is checked against the other filters.
-- Without a filter, the five state indexes together hold every lease once:
-- the first `limit` of each are merged. A provider is only checked on the
-- leases the other filters find (no index holds leases by provider).
local task_id, agent, state, after, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local provider = ARGV[6]
if provider ~= '' then provider = string.sub(provider, 2) else provider = nil end
if after == '' then after = nil end
if task_id ~= '' then task_id = string.sub(task_id, 2) else task_id = nil end
if agent ~= '' then agent = string.sub(agent, 2) else agent = nil end
if state == '' then state = nil end

local found = {}
local function add(id, raw)
  table.insert(found, id)
  table.insert(found, raw)
end

local indexes = {}
if task_id then table.insert(indexes, 'task-leases:' .. task_id) end
if agent then table.insert(indexes, 'agent-leases:' .. agent) end
if state then table.insert(indexes, 'state:' .. state) end

if #indexes == 0 and provider then
  error('writ: a provider filter needs a task, agent or state filter too')
end

if #indexes == 0 then
  local ids = {}
  for _, name in ipairs({ 'pending', 'active', 'revoking', 'revoked', 'failed' }) do
    for _, id in ipairs(index_range('state:' .. name, after, '+', limit)) do
      table.insert(ids, id)
    end
  end
  table.sort(ids, bytes_before)
  for i = 1, math.min(limit, #ids) do
    local raw = redis.call('HGET', LEASES, ids[i])
    if not raw then error('writ: an index names a lease that does not exist') end
    add(ids[i], raw)
  end
  return found
end

local sizes = {}
for _, name in ipairs(indexes) do sizes[name] = index_size(name) end
table.sort(indexes, function(a, b) return sizes[a] < sizes[b] end)
local page = math.max(limit, 100)
while #found < 2 * limit do
  local batch = index_range(indexes[1], after, '+', page)
  for _, id in ipairs(batch) do
    local raw = redis.call('HGET', LEASES, id)
    if not raw then error('writ: an index names a lease that does not exist') end
    local lease = decode_lease(raw)
    if (not task_id or lease.task == task_id) and (not agent or lease.agent == agent)
      and (not state or lease.state == state) and (not provider or lease.provider == provider) then
      add(id, raw)
      if #found == 2 * limit then break end
    end
  end
  if #batch < page then break end
  after = batch[#batch]
end
return found

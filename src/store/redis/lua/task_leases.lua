-- ARGV: task id. Replies {id, record, id, record, ...} for the task's leases.
local leases = {}
for _, id in ipairs(index_range('task-leases:' .. ARGV[1], nil, '+', ALL)) do
  local raw = redis.call('HGET', LEASES, id)
  if not raw then
    error('writ: an index names a lease that does not exist')
  end
  table.insert(leases, id)
  table.insert(leases, raw)
end
return leases

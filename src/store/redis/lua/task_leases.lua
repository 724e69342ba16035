-- ARGV: task id. Replies with the JSON of each of the task's leases.
local leases = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'task-leases:' .. ARGV[1], 0, -1)) do
  local raw = redis.call('GET', lease_key(id))
  if not raw then
    error('writ: an index names a lease that does not exist')
  end
  table.insert(leases, raw)
end
return leases

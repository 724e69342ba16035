-- Resharding (reshard.rs): removes a task that has been copied to its new
-- shard, up to `limit` of its leases per call. ARGV: task id, limit.
-- Replies {'more'} while leases are left, then removes the task, its
-- schedule entries and its approval requests and replies {'ok'}.
local task_id, limit = ARGV[1], tonumber(ARGV[2])
local ids = index_range('task-leases:' .. task_id, nil, '+', limit)
local removes, names = {}, {}
for _, id in ipairs(ids) do
  local _, old = load_lease(id)
  for _, entry in ipairs(old) do
    if not removes[entry[1]] then
      removes[entry[1]] = {}
      table.insert(names, entry[1])
    end
    table.insert(removes[entry[1]], entry[2])
  end
end
for from = 1, #ids, 512 do
  redis.call('HDEL', LEASES, unpack(ids, from, math.min(from + 511, #ids)))
end
for _, name in ipairs(names) do index_remove_all(name, removes[name]) end
if #ids == limit then
  return { 'more' }
end
local key = task_key(task_id)
local raw = redis.call('GET', key)
if raw then
  redis.call('DEL', key)
end
redis.call('ZREM', P .. 'deadlines', task_id)
redis.call('ZREM', P .. 'closed-tasks', task_id)
for i = 3, #ARGV do
  redis.call('DEL', P .. 'approval:' .. ARGV[i])
  redis.call('ZREM', P .. 'approvals', ARGV[i])
  redis.call('ZREM', P .. 'approvals-open', ARGV[i])
end
return { 'ok' }

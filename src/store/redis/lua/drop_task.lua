-- Resharding (reshard.rs): removes a task that has been copied to its new
-- shard, up to `limit` of its leases per call. ARGV: task id (empty for
-- none), limit, then approval request ids to remove.
-- Replies {'more'} while leases are left, then removes the task, its
-- schedule entries and the approval requests and replies {'ok'}.
local task_id, limit = ARGV[1], tonumber(ARGV[2])
local ids = {}
if task_id ~= '' then
  ids = index_range('task-leases:' .. task_id, nil, '+', limit)
end
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
if task_id ~= '' then
  redis.call('DEL', task_key(task_id))
  redis.call('ZREM', P .. 'deadlines', task_id)
  redis.call('ZREM', P .. 'closed-tasks', task_id)
end
for i = 3, #ARGV do
  redis.call('DEL', P .. 'approval:' .. ARGV[i])
  redis.call('ZREM', P .. 'approvals', ARGV[i])
  redis.call('ZREM', P .. 'approvals-open', ARGV[i])
end
return { 'ok' }

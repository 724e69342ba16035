-- ARGV: task id, closure JSON, reason code, now (task time text), now.
-- Replies {'ok', task JSON, {ids moved to revoking}}.
local task_id, reason, now_text, now = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local raw = redis.call('GET', task_key(task_id))
if not raw then
  return { 'task_not_found' }
end
local task = cjson.decode(raw)
if task.state == 'closed' then
  return { 'ok', raw, {} }
end
task.state = 'closed'
task.closed = cjson.decode(ARGV[2])
local changes, revoking = {}, {}
for _, id in ipairs(index_range('task-leases:' .. task_id, nil, '+', ALL)) do
  local lease, old = load_lease(id)
  if lease.state == 'pending' or lease.state == 'active' then
    plan_revoking(changes, id, lease, old, reason, now)
    table.insert(revoking, id)
  end
end
local closed = cjson.encode(task)
redis.call('SET', task_key(task_id), closed)
redis.call('ZREM', P .. 'deadlines', task_id)
apply(changes)
return { 'ok', closed, revoking }

-- ARGV: lease id, lease JSON, task id, agent, lease state, created_at (ms), now.
local id, json, task_id, agent, state, created_ms, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local raw = redis.call('GET', task_key(task_id))
if not raw then
  return { 'task_not_found' }
end
local task = cjson.decode(raw)
if task.state ~= 'open' or not before(now, task.deadline) then
  return { 'task_closed' }
end
if state ~= 'pending' then
  return { 'lease_state', state }
end
-- Overwriting would orphan the existing lease's index entries.
local existing = redis.call('GET', lease_key(id))
if existing then
  return { 'lease_state', cjson.decode(existing).state }
end
redis.call('SET', lease_key(id), json)
redis.call('ZADD', state_index('pending'), 0, id)
redis.call('ZADD', P .. 'task-leases:' .. task_id, 0, id)
redis.call('ZADD', P .. 'agent-leases:' .. agent, 0, id)
redis.call('ZADD', SCHEDULES.pending, created_ms, id)
return { 'ok' }

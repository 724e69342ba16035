-- ARGV: task id, closure JSON, reason code, now (task time text), now,
-- limit, now (ms). Replies {'ok' or 'more', task JSON, {ids moved to
-- revoking}, reason code}.
--
-- Closing marks the task closed at once (so nothing more is issued under
-- it) and moves at most `limit` of its leases to revoking per call, so no
-- call holds Redis for long however many leases the task has. While some
-- are left, `closing` holds the task with the reason and the last lease id
-- done, the reply is 'more', and the next call (by the closer, or by the
-- sweep after a crash) goes on from there with the reason first given.
local task_id, reason, now, limit = ARGV[1], tonumber(ARGV[3]), ARGV[5], tonumber(ARGV[6])
local raw = redis.call('GET', task_key(task_id))
if not raw then
  return { 'task_not_found' }
end
local CLOSING = P .. 'closing'
local after
local task = cjson.decode(raw)
if task.state == 'closed' then
  local closing = redis.call('HGET', CLOSING, task_id)
  if not closing then
    return { 'ok', raw, {}, reason }
  end
  local colon = string.find(closing, ':', 1, true)
  reason = tonumber(string.sub(closing, 1, colon - 1))
  after = string.sub(closing, colon + 1)
  if after == '' then after = nil end
end
-- Everything is read and planned before anything is written: a damaged
-- lease fails the call with nothing changed (scripts are not rolled back).
local changes, revoking = {}, {}
local ids = index_range('task-leases:' .. task_id, after, '+', limit)
for _, id in ipairs(ids) do
  local lease, old = load_lease(id)
  if lease.state == 'pending' or lease.state == 'active' then
    plan_revoking(changes, id, lease, old, reason, now)
    table.insert(revoking, id)
  end
end
if task.state ~= 'closed' then
  task.state = 'closed'
  task.closed = cjson.decode(ARGV[2])
  raw = cjson.encode(task)
  redis.call('SET', task_key(task_id), raw)
  redis.call('ZREM', P .. 'deadlines', task_id)
end
apply(changes)
if #ids < limit then
  redis.call('HDEL', CLOSING, task_id)
  -- Closed for good: forgotten by the sweep once its retention has passed
  -- and its leases are forgotten (sweep.lua). A close finished by a later
  -- call counts from then.
  redis.call('ZADD', P .. 'closed-tasks', ARGV[7], task_id)
  return { 'ok', raw, revoking, reason }
end
redis.call('HSET', CLOSING, task_id, reason .. ':' .. ids[#ids])
return { 'more', raw, revoking, reason }

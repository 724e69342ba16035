-- ARGV: lease id, lease record, now (task time text), now (ms).
-- The task id and agent are read from the record.
local id, raw, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease = decode_lease(raw)
-- `deadlines` holds every open task with its deadline in whole ms
-- (rounded down): a later ms settles it without reading the task.
local deadline_ms = redis.call('ZSCORE', P .. 'deadlines', lease.task)
if not deadline_ms or tonumber(deadline_ms) <= now_ms then
  local task_raw = redis.call('GET', task_key(lease.task))
  if not task_raw then
    return { 'task_not_found' }
  end
  local task = cjson.decode(task_raw)
  if task.state ~= 'open' or not before(now, task.deadline) then
    return { 'task_closed' }
  end
end
if lease.state ~= 'pending' then
  return { 'lease_state', lease.state }
end
-- Overwriting would orphan the existing lease's index entries.
local existing = redis.call('HGET', LEASES, id)
if existing then
  return { 'lease_state', decode_lease(existing).state }
end
local new = entries(id, lease)
redis.call('HSET', LEASES, id, raw)
for _, entry in ipairs(new) do
  index_add(entry[1], entry[2])
end
return { 'ok' }

-- ARGV: now, pending_before, forget_before, limit, forget_before (ms, or
-- "-inf"), recheck (ms).
-- Replies {'ok', {expired ids}, {abandoned ids}, forgotten count,
-- forgotten task count, {agent, task} of each expired then each abandoned
-- lease (flat)}.
--
-- Active leases due by now expire; pending leases created before
-- pending_before are abandoned; finished leases completed by forget_before
-- (their retention passed) are forgotten: the record and every index entry
-- go. The audit log keeps the lasting record of them.
local now, cutoff, forget_before, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local forget_tasks_before, recheck = ARGV[5], ARGV[6]
-- Read before any write, so that bad arguments fail with nothing written.
local CLOSED = P .. 'closed-tasks'
local closed_due = redis.call('ZRANGEBYSCORE', CLOSED, '-inf', forget_tasks_before, 'LIMIT', 0, limit)
if not tonumber(recheck) then error('writ: the sweep\'s recheck time is not a number') end
local EXPIRED, ABANDONED = 2, 5
local expired = due('expiries', due_by(now), limit)
local abandoned = due('pending', '(' .. cutoff, limit)
local forgotten = due('finished', due_by(forget_before), limit)
local changes, expired_ids, abandoned_ids, names = {}, {}, {}, {}
for _, found in ipairs(expired) do
  table.insert(names, found[2].agent)
  table.insert(names, found[2].task)
  plan_revoking(changes, found[1], found[2], found[3], EXPIRED, now)
  table.insert(expired_ids, found[1])
end
for _, found in ipairs(abandoned) do
  table.insert(names, found[2].agent)
  table.insert(names, found[2].task)
  plan_revoking(changes, found[1], found[2], found[3], ABANDONED, now)
  table.insert(abandoned_ids, found[1])
end
apply(changes)
for _, found in ipairs(forgotten) do
  for _, entry in ipairs(found[3]) do
    index_remove(entry[1], entry[2])
  end
  redis.call('HDEL', LEASES, found[1])
end
-- Closed tasks past their retention go once none of their leases is left
-- (the leases' own retention counts from when each finished, so it ends
-- later); a task that still has some is looked at again at `recheck`.
local forgotten_tasks = 0
for _, task_id in ipairs(closed_due) do
  if index_size('task-leases:' .. task_id) == 0 then
    redis.call('DEL', task_key(task_id))
    redis.call('ZREM', CLOSED, task_id)
    forgotten_tasks = forgotten_tasks + 1
  else
    redis.call('ZADD', CLOSED, recheck, task_id)
  end
end
return { 'ok', expired_ids, abandoned_ids, #forgotten, forgotten_tasks, names }

-- Resharding (reshard.rs): writes a task moved from another shard, as it
-- was there. ARGV: task id, task JSON, deadline (ms, '' if closed), when
-- its close finished (ms, '' if open), then per approval request of the
-- task: id, JSON, due (ms, '' once final). An empty task id writes only
-- the approval requests. What is here already is kept: a reshard cut
-- short runs again over what it had copied.
local task_id, json, deadline, closed = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if task_id ~= '' then
  local key = task_key(task_id)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, json)
  end
  if deadline ~= '' then
    redis.call('ZADD', P .. 'deadlines', deadline, task_id)
  end
  if closed ~= '' then
    redis.call('ZADD', P .. 'closed-tasks', closed, task_id)
  end
end
for i = 5, #ARGV, 3 do
  local id, approval, due = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local approval_key = P .. 'approval:' .. id
  if redis.call('EXISTS', approval_key) == 0 then
    redis.call('SET', approval_key, approval)
    redis.call('ZADD', P .. 'approvals', 0, id)
    if due ~= '' then
      redis.call('ZADD', P .. 'approvals-open', tonumber(due), id)
    end
  end
end
return { 'ok' }

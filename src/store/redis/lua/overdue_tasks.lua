-- ARGV: now, now (ms), limit. Replies with the ids of open tasks whose
-- deadline is at or before now, oldest first, each followed by its
-- deadline (ms), so that the caller can merge shards in deadline order.
local now, now_ms, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local overdue = {}
local offset = 0
while #overdue < 2 * limit do
  local batch = redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', now_ms, 'WITHSCORES', 'LIMIT', offset, limit)
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    local task_id = batch[i]
    local wanted = true
    -- Within now's own millisecond only the task knows which side it is.
    if tonumber(batch[i + 1]) == tonumber(now_ms) then
      local raw = redis.call('GET', task_key(task_id))
      if not raw then
        error('writ: the deadline index names a task that does not exist')
      end
      local task = cjson.decode(raw)
      wanted = task.state == 'open' and not before(now, task.deadline)
    end
    if wanted then
      table.insert(overdue, task_id)
      table.insert(overdue, batch[i + 1])
      if #overdue == 2 * limit then break end
    end
  end
  offset = offset + #batch / 2
end
return overdue

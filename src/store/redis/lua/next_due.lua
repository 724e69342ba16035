-- Replies with the earliest entry of each schedule (false where it is
-- empty): the earliest expiry, the earliest next revocation attempt (both
-- as a schedule entry, whose first 8 bytes are the time), and the task
-- JSON of the open task with the earliest deadline.
local function first(name)
  return index_range(name, nil, '+', 1)[1] or false
end
local deadline = redis.call('ZRANGE', P .. 'deadlines', 0, 0)[1]
local task = false
if deadline then
  task = redis.call('GET', task_key(deadline))
  if not task then
    error('writ: the deadline index names a task that does not exist')
  end
end
return { first('expiries'), first('queue'), task }

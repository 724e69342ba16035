-- ARGV: task id, task JSON, deadline (ms), "1" if the task is open.
local key = task_key(ARGV[1])
if redis.call('EXISTS', key) == 1 then
  return { 'task_exists' }
end
redis.call('SET', key, ARGV[2])
if ARGV[4] == '1' then
  redis.call('ZADD', P .. 'deadlines', ARGV[3], ARGV[1])
end
return { 'ok' }

-- ARGV: approval id, the stored JSON this change was made from ('' for a
-- new request), the new JSON, its task id and agent, whether to refuse
-- under a closed task or a suspended agent ('1'), now (task time text),
-- now (ms), its due time (ms; '' once it is final).
-- The change itself (a vote, a collection, an end) is worked out by the
-- caller from the JSON it read (store/approval_rules.rs); this applies it
-- only if the request is still exactly that JSON, so of two concurrent
-- changes one wins and the other reads again.
-- Replies {'ok'}, {'conflict'}, {'exists'} for a new request whose id is
-- taken, or a refusal ({'task_not_found'}, {'task_closed'},
-- {'agent_suspended'}).
local id, expected, new, task, agent = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local check, now, now_ms, due = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local key = P .. 'approval:' .. id
local current = redis.call('GET', key)
if expected == '' then
  if current then
    return { 'exists' }
  end
elseif current ~= expected then
  return { 'conflict' }
end
if check == '1' then
  local refused = refusal({ task = task, agent = agent }, now, now_ms)
  if refused then
    return { refused }
  end
end
redis.call('SET', key, new)
redis.call('ZADD', P .. 'approvals', 0, id)
if due == '' then
  redis.call('ZREM', P .. 'approvals-open', id)
else
  redis.call('ZADD', P .. 'approvals-open', tonumber(due), id)
end
return { 'ok' }

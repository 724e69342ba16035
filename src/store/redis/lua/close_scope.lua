-- ARGV: scope kind ('task', 'agent' or 'provider'), scope id, what ending
-- the scope writes (a task's closure, or an agent's or a provider's status
-- as suspended: JSON; empty
-- to only go on with a close under way), reason code, now (record time),
-- limit, now (ms), 'takeover' when the sweep goes on with a close someone
-- else began (else '').
-- Replies {'ok' or 'more', the task or agent status JSON, {ids moved to
-- revoking}, reason code, 'new' if this call ended the scope else 'old',
-- {agent, task} of each lease moved (flat)}.
--
-- Ending marks the scope ended at once (a task closed, an agent in
-- `suspended`), so nothing more is inserted, activated or extended under
-- it (`refusal` in common.lua), and moves at most `limit` of its leases to
-- revoking per call, so no call holds Redis for long however many leases
-- the scope has. While some are left, `closing` (tasks), `closing-agents`
-- or `closing-providers` holds the scope with the reason and the last
-- lease id done, the reply is 'more', and the next call (by the closer, or
-- by the sweep after a crash) goes on from there with the reason first
-- given.
--
-- Nothing indexes leases by provider: a provider's close walks
-- `state:active` (each call `limit` leases of any provider, moving those of
-- this one), after the call that ends it has moved its pending leases
-- (`state:pending` is small: issues under way). No lease of the provider
-- becomes active once it is suspended (`refusal`), so the walk misses none.
--
-- With an empty `ending` (the sweep, or a resume finishing a suspension)
-- the call never ends a scope: one that is not ended, or has no close
-- under way, answers {'idle'} with nothing changed. So a sweep that read
-- `closing-agents` just before another replica finished the suspension
-- and an operator resumed the agent cannot suspend it again.
local kind, scope_id, ending = ARGV[1], ARGV[2], ARGV[3]
local reason, now, limit = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local now_ms, takeover = tonumber(ARGV[7]), ARGV[8] == 'takeover'
-- When each close under way last moved a batch: the sweep leaves a close
-- alone for a second after that (its caller is moving it, and counts what
-- it moves), and takes over one whose caller went quiet (crashed).
local TOUCHED, touched_field = P .. 'closing-touched', kind .. ':' .. scope_id
local TAKEOVER_MS = 1000
local CLOSING, raw, ended, index
if kind == 'task' then
  CLOSING = P .. 'closing'
  raw = redis.call('GET', task_key(scope_id))
  if not raw then
    return { 'task_not_found' }
  end
  ended = cjson.decode(raw).state == 'closed'
  index = 'task-leases:' .. scope_id
elseif kind == 'agent' then
  CLOSING = P .. 'closing-agents'
  raw = redis.call('HGET', P .. 'agents', scope_id)
  ended = redis.call('SISMEMBER', SUSPENDED, scope_id) == 1
  index = 'agent-leases:' .. scope_id
elseif kind == 'provider' then
  CLOSING = P .. 'closing-providers'
  raw = redis.call('HGET', P .. 'providers', scope_id)
  ended = redis.call('SISMEMBER', SUSPENDED_PROVIDERS, scope_id) == 1
  index = 'state:active'
else
  error('writ: unknown scope kind')
end
if ending == '' and not (ended and redis.call('HEXISTS', CLOSING, scope_id) == 1) then
  return { 'idle' }
end
if takeover then
  local touched = redis.call('HGET', TOUCHED, touched_field)
  if touched and now_ms - tonumber(touched) < TAKEOVER_MS then
    return { 'busy' }
  end
end
local after
if ended then
  local closing = redis.call('HGET', CLOSING, scope_id)
  if not closing then
    return { 'ok', raw, {}, reason, 'old', {} }
  end
  local colon = string.find(closing, ':', 1, true)
  reason = tonumber(string.sub(closing, 1, colon - 1))
  after = string.sub(closing, colon + 1)
  if after == '' then after = nil end
end
-- Everything is read and planned before anything is written: a damaged
-- lease fails the call with nothing changed (scripts are not rolled back).
local changes, revoking, names = {}, {}, {}
local function take(ids)
  for _, id in ipairs(ids) do
    local lease, old = load_lease(id)
    local live = lease.state == 'pending' or lease.state == 'active'
    if live and (kind ~= 'provider' or lease.provider == scope_id) then
      table.insert(names, lease.agent)
      table.insert(names, lease.task)
      plan_revoking(changes, id, lease, old, reason, now)
      table.insert(revoking, id)
    end
  end
end
if kind == 'provider' and not ended then
  take(index_range('state:pending', nil, '+', limit))
end
local ids = index_range(index, after, '+', limit)
take(ids)
if not ended then
  if kind == 'task' then
    local task = cjson.decode(raw)
    task.state = 'closed'
    task.closed = cjson.decode(ending)
    raw = cjson.encode(task)
    redis.call('SET', task_key(scope_id), raw)
    redis.call('ZREM', P .. 'deadlines', scope_id)
  elseif kind == 'agent' then
    raw = ending
    needs_layout(reason >= REASON_CODES.agent_retired and '4' or '3')
    redis.call('HSET', P .. 'agents', scope_id, raw)
    redis.call('SADD', SUSPENDED, scope_id)
  else
    raw = ending
    needs_layout('4')
    redis.call('HSET', P .. 'providers', scope_id, raw)
    redis.call('SADD', SUSPENDED_PROVIDERS, scope_id)
  end
end
apply(changes)
local fresh = ended and 'old' or 'new'
if #ids < limit then
  redis.call('HDEL', CLOSING, scope_id)
  -- A task closed for good is forgotten by the sweep once its retention
  -- has passed and its leases are forgotten (sweep.lua). A close finished
  -- by a later call counts from then.
  if kind == 'task' then
    redis.call('ZADD', P .. 'closed-tasks', ARGV[7], scope_id)
  end
  redis.call('HDEL', TOUCHED, touched_field)
  return { 'ok', raw, revoking, reason, fresh, names }
end
redis.call('HSET', CLOSING, scope_id, reason .. ':' .. ids[#ids])
redis.call('HSET', TOUCHED, touched_field, now_ms)
return { 'more', raw, revoking, reason, fresh, names }

-- ARGV: agent, its status as resumed (JSON).
-- Replies {'ok'}, {'not_suspended'}, or {'closing'} while its suspension
-- is still moving leases (the caller finishes that first: a lease issued
-- after the resume must not be taken by the rest of that close).
local agent, status = ARGV[1], ARGV[2]
if redis.call('HEXISTS', P .. 'closing-agents', agent) == 1 then
  return { 'closing' }
end
if redis.call('SISMEMBER', SUSPENDED, agent) == 0 then
  return { 'not_suspended' }
end
uses_states()
redis.call('HSET', P .. 'agents', agent, status)
redis.call('SREM', SUSPENDED, agent)
return { 'ok' }

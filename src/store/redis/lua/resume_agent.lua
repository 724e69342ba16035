-- ARGV: agent, its status as resumed (JSON).
-- Replies {'ok'}, {'not_suspended'}, {'retired'} (its record says so:
-- retirement is final), or {'closing'} while its suspension
-- is still moving leases (the caller finishes that first: a lease issued
-- after the resume must not be taken by the rest of that close).
local agent, status = ARGV[1], ARGV[2]
if redis.call('HEXISTS', P .. 'closing-agents', agent) == 1 then
  return { 'closing' }
end
if redis.call('SISMEMBER', SUSPENDED, agent) == 0 then
  return { 'not_suspended' }
end
local record = redis.call('HGET', P .. 'registry', agent)
if record then
  local retired = cjson.decode(record).retired
  if retired ~= nil and retired ~= cjson.null then
    return { 'retired' }
  end
end
needs_layout('3')
redis.call('HSET', P .. 'agents', agent, status)
redis.call('SREM', SUSPENDED, agent)
return { 'ok' }

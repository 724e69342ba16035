-- ARGV: provider, its status as resumed (JSON).
-- Replies {'ok'}, {'not_suspended'}, or {'closing'} while its suspension
-- is still moving leases (the caller finishes that first: a lease issued
-- after the resume must not be taken by the rest of that close).
local provider, status = ARGV[1], ARGV[2]
if redis.call('HEXISTS', P .. 'closing-providers', provider) == 1 then
  return { 'closing' }
end
if redis.call('SISMEMBER', SUSPENDED_PROVIDERS, provider) == 0 then
  return { 'not_suspended' }
end
needs_layout('4')
redis.call('HSET', P .. 'providers', provider, status)
redis.call('SREM', SUSPENDED_PROVIDERS, provider)
return { 'ok' }

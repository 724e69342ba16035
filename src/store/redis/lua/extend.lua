-- ARGV: lease id, expires_at, now (task time text), now (ms).
-- Replies {'ok', lease record}, or why not: nothing is extended under a
-- closed task or for a suspended agent.
local id, expires_at, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local raw = redis.call('HGET', LEASES, id)
if not raw then
  return { 'lease_not_found' }
end
local lease = decode_lease(raw)
if lease.state ~= 'active' then
  return { 'lease_state', lease.state }
end
local refused = refusal(lease, now, now_ms)
if refused then
  if refused == 'task_not_found' then refused = 'task_closed' end
  return { refused }
end
local old = entries(id, lease)
lease.expires = expires_at
local changes = {}
plan_lease(changes, id, old, lease)
apply(changes)
return { 'ok', changes[1].raw }

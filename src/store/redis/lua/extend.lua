-- ARGV: lease id, expires_at. Replies {'ok', lease record}.
local id, expires_at = ARGV[1], ARGV[2]
local raw = redis.call('HGET', LEASES, id)
if not raw then
  return { 'lease_not_found' }
end
local lease = decode_lease(raw)
if lease.state ~= 'active' then
  return { 'lease_state', lease.state }
end
local old = entries(id, lease)
lease.expires = expires_at
local changes = {}
plan_lease(changes, id, old, lease)
apply(changes)
return { 'ok', changes[1].raw }

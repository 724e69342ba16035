-- ARGV: lease id, expires_at, expires_at (ms). Replies {'ok', lease JSON}.
local id, expires_at, expires_ms = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('GET', lease_key(id))
if not raw then
  return { 'lease_not_found' }
end
local lease = cjson.decode(raw)
if lease.state ~= 'active' then
  return { 'lease_state', lease.state }
end
lease.expires_at = expires_at
local changes = {}
plan_lease(changes, id, 'active', lease, expires_ms)
apply(changes)
return { 'ok', changes[1].json }

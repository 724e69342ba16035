-- ARGV: lease id, expires_at, handle (as a record holds it), now.
-- Replies {'ok', lease record}, or an error status after storing the handle
-- of a lease that is no longer pending.
local id, expires_at, handle, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local raw = redis.call('HGET', LEASES, id)
if not raw then
  return { 'lease_not_found' }
end
local lease = decode_lease(raw)
local old = entries(id, lease)
local state = lease.state
local changes = {}
if state == 'pending' then
  lease.state = 'active'
  lease.issued = now
  lease.expires = expires_at
  lease.handle = handle
  plan_lease(changes, id, old, lease)
  apply(changes)
  return { 'ok', changes[1].raw }
elseif state == 'revoking' or state == 'revoked' or state == 'failed' then
  -- Closed meanwhile: the credential exists at the provider now, and the
  -- revocation must use its real handle, due at once under a new
  -- generation, so that an attempt under way with the intent handle is
  -- stale; or the revocation even finished (with the intent handle) before
  -- the mint returned, and the lease is queued again.
  lease.handle = handle
  lease.state = 'revoking'
  lease.revocation.generation = next_generation(lease.revocation)
  lease.revocation.next = now
  lease.revocation.completed = false
  plan_lease(changes, id, old, lease)
end
apply(changes)
return { 'lease_state', state }

-- ARGV: lease id, expires_at, expires_at (ms), handle JSON, now, now (ms).
-- Replies {'ok', lease JSON}, or an error status after storing the handle
-- of a lease that is no longer pending.
local id, expires_at, expires_ms, handle, now, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local raw = redis.call('GET', lease_key(id))
if not raw then
  return { 'lease_not_found' }
end
local lease = cjson.decode(raw)
local state = lease.state
local changes = {}
if state == 'pending' then
  lease.state = 'active'
  lease.issued_at = now
  lease.expires_at = expires_at
  lease.handle = cjson.decode(handle)
  plan_lease(changes, id, state, lease, expires_ms)
  apply(changes)
  return { 'ok', changes[1].json }
elseif state == 'revoking' or state == 'revoked' or state == 'failed' then
  -- Closed meanwhile: the credential exists at the provider now, and the
  -- revocation must use its real handle, due at once under a new
  -- generation, so that an attempt under way with the intent handle is
  -- stale; or the revocation even finished (with the intent handle) before
  -- the mint returned, and the lease is queued again.
  if type(lease.revocation) ~= 'table' then
    error('writ: a revoked lease has no revocation record')
  end
  lease.handle = cjson.decode(handle)
  lease.state = 'revoking'
  lease.revocation.generation = next_generation(lease.revocation)
  lease.revocation.next_attempt_at = now
  lease.revocation.completed_at = cjson.null
  plan_lease(changes, id, state, lease, now_ms)
end
apply(changes)
return { 'lease_state', state }

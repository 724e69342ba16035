-- ARGV: lease id, expires_at, handle (as a record holds it), now, now
-- (task time text), now (ms).
-- Replies {'ok', lease record}, or an error status after storing the handle
-- of a lease that is no longer pending, or that is still pending under a
-- closed task or a suspended agent (whose close has not reached it yet:
-- it goes to revoking now, with the close's reason).
local id, expires_at, handle, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_text, now_ms = ARGV[5], tonumber(ARGV[6])
local raw = redis.call('HGET', LEASES, id)
if not raw then
  return { 'lease_not_found' }
end
local lease = decode_lease(raw)
local old = entries(id, lease)
local state = lease.state
local changes = {}
if state == 'pending' then
  local refused, reason = refusal(lease, now_text, now_ms)
  if refused then
    lease.handle = handle
    plan_revoking(changes, id, lease, old, reason, now)
    apply(changes)
    if refused == 'task_not_found' then refused = 'task_closed' end
    return { refused }
  end
end
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

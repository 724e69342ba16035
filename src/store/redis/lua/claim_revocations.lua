-- ARGV: now, claim_until, limit.
-- Replies {'ok', {id, record, id, record, ...}} for the claimed leases.
--
-- The claim is the queue entry itself: moving a lease's next attempt to
-- claim_until hides it from every other worker until then, in the same
-- script that found it due, so two workers never both take it; a claim
-- whose worker never reports back simply falls due again.
local now, claim_until, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local changes, claimed = {}, {}
for _, found in ipairs(due('queue', due_by(now), limit)) do
  local id, lease, old = found[1], found[2], found[3]
  lease.revocation.attempts = (lease.revocation.attempts + 1) % 4294967296
  lease.revocation.next = claim_until
  plan_lease(changes, id, old, lease)
  table.insert(claimed, id)
  table.insert(claimed, changes[#changes].raw)
end
apply(changes)
return { 'ok', claimed }

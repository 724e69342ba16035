-- ARGV: now, now (ms), claim_until, claim_until (ms), limit.
-- Replies {'ok', {claimed lease JSON}}.
--
-- The claim is the queue entry itself: moving a lease's next attempt to
-- claim_until hides it from every other worker until then, in the same
-- script that found it due, so two workers never both take it; a claim
-- whose worker never reports back simply falls due again.
local now, now_ms, claim_until, until_ms, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local found = due(SCHEDULES.revoking, now_ms, limit, function(lease)
  return lease.state == 'revoking' and type(lease.revocation) == 'table'
    and not before(now, lease.revocation.next_attempt_at)
end)
local changes, claimed = {}, {}
for _, entry in ipairs(found) do
  local id, lease = entry[1], entry[2]
  lease.revocation.attempts = lease.revocation.attempts + 1
  lease.revocation.next_attempt_at = claim_until
  plan_lease(changes, id, 'revoking', lease, until_ms)
  table.insert(claimed, changes[#changes].json)
end
apply(changes)
return { 'ok', claimed }

-- ARGV: now, then six per outcome: lease id, "done" or "retry",
-- generation, next_attempt_at, next_attempt_at (ms), error (the last three
-- empty for "done"). Replies {'ok'} or {'lease_not_found', id}.
--
-- Outcomes for leases that are no longer revoking (a lapsed claim that
-- another worker finished), or for an older generation (an attempt made
-- with a handle since replaced), are ignored; an unknown lease fails the
-- call, since outcomes come from claims and one that names nothing is a bug.
local now = ARGV[1]
local touched, order = {}, {}
for i = 2, #ARGV, 6 do
  local id, kind, outcome_generation = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local entry = touched[id]
  if not entry then
    local raw = redis.call('GET', lease_key(id))
    if not raw then
      return { 'lease_not_found', id }
    end
    local lease = cjson.decode(raw)
    entry = { lease = lease, old = lease.state, changed = false }
    touched[id] = entry
    table.insert(order, id)
  end
  local lease = entry.lease
  if lease.state == 'revoking' and type(lease.revocation) ~= 'table' then
    error('writ: a revoking lease has no revocation record')
  end
  if lease.state == 'revoking' and generation(lease.revocation) == outcome_generation then
    entry.changed = true
    if kind == 'done' then
      lease.revocation.completed_at = now
      lease.state = lease.revocation.reason == 'mint_failed' and 'failed' or 'revoked'
    else
      lease.revocation.next_attempt_at = ARGV[i + 3]
      lease.revocation.last_error = ARGV[i + 5]
      entry.score = ARGV[i + 4]
    end
  end
end
local changes = {}
for _, id in ipairs(order) do
  local entry = touched[id]
  if entry.changed then
    plan_lease(changes, id, entry.old, entry.lease, entry.score)
  end
end
apply(changes)
return { 'ok' }

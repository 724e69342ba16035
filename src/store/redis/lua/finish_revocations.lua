-- ARGV: now, then five per outcome: lease id, "done", "retry" or
-- "gave_up", generation, next_attempt_at (empty but for "retry"), error
-- (empty for "done").
-- Replies {'ok'} or {'lease_not_found', id}.
--
-- Outcomes for leases that are no longer revoking (a lapsed claim that
-- another worker finished), or for an older generation (an attempt made
-- with a handle since replaced), are ignored; an unknown lease fails the
-- call, since outcomes come from claims and one that names nothing is a bug.
local now = ARGV[1]
local touched, order = {}, {}
for i = 2, #ARGV, 5 do
  local id, kind, outcome_generation = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local entry = touched[id]
  if not entry then
    local raw = redis.call('HGET', LEASES, id)
    if not raw then
      return { 'lease_not_found', id }
    end
    local lease = decode_lease(raw)
    entry = { lease = lease, old = entries(id, lease), changed = false }
    touched[id] = entry
    table.insert(order, id)
  end
  local lease = entry.lease
  if lease.state == 'revoking' and lease.revocation.generation == outcome_generation then
    entry.changed = true
    if kind == 'done' then
      lease.revocation.completed = now
      -- A finished revocation carries no error: an error on a failed lease
      -- is what says its revocation gave up.
      lease.revocation.last_error = false
      lease.state = lease.revocation.reason == MINT_FAILED and 'failed' or 'revoked'
    elseif kind == 'gave_up' then
      lease.revocation.completed = now
      lease.revocation.last_error = ARGV[i + 4]
      lease.state = 'failed'
    elseif kind == 'retry' then
      lease.revocation.next = ARGV[i + 3]
      lease.revocation.last_error = ARGV[i + 4]
    else
      error('writ: unknown revocation outcome')
    end
  end
end
local changes = {}
for _, id in ipairs(order) do
  local entry = touched[id]
  if entry.changed then
    plan_lease(changes, id, entry.old, entry.lease)
  end
end
apply(changes)
return { 'ok' }

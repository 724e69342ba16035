-- ARGV: now, now (ms), pending_before, pending_before (ms), limit.
-- Replies {'ok', {expired ids}, {abandoned ids}}.
local now, now_ms, cutoff, cutoff_ms, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local expired = due(SCHEDULES.active, now_ms, limit, function(lease)
  return lease.state == 'active' and not before(now, lease.expires_at)
end)
local abandoned = due(SCHEDULES.pending, cutoff_ms, limit, function(lease)
  return lease.state == 'pending' and before(lease.created_at, cutoff)
end)
local changes, expired_ids, abandoned_ids = {}, {}, {}
for _, found in ipairs(expired) do
  plan_revoking(changes, found[1], found[2], 'expired', now, now_ms)
  table.insert(expired_ids, found[1])
end
for _, found in ipairs(abandoned) do
  plan_revoking(changes, found[1], found[2], 'abandoned', now, now_ms)
  table.insert(abandoned_ids, found[1])
end
apply(changes)
return { 'ok', expired_ids, abandoned_ids }

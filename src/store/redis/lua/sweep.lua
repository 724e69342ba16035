-- ARGV: now, pending_before, forget_before, limit.
-- Replies {'ok', {expired ids}, {abandoned ids}, forgotten count}.
--
-- Active leases due by now expire; pending leases created before
-- pending_before are abandoned; finished leases completed by forget_before
-- (their retention passed) are forgotten: the record and every index entry
-- go. The audit log keeps the lasting record of them.
local now, cutoff, forget_before, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local EXPIRED, ABANDONED = 2, 5
local expired = due('expiries', due_by(now), limit)
local abandoned = due('pending', '(' .. cutoff, limit)
local forgotten = due('finished', due_by(forget_before), limit)
local changes, expired_ids, abandoned_ids = {}, {}, {}
for _, found in ipairs(expired) do
  plan_revoking(changes, found[1], found[2], found[3], EXPIRED, now)
  table.insert(expired_ids, found[1])
end
for _, found in ipairs(abandoned) do
  plan_revoking(changes, found[1], found[2], found[3], ABANDONED, now)
  table.insert(abandoned_ids, found[1])
end
apply(changes)
for _, found in ipairs(forgotten) do
  for _, entry in ipairs(found[3]) do
    index_remove(entry[1], entry[2])
  end
  redis.call('HDEL', LEASES, found[1])
end
return { 'ok', expired_ids, abandoned_ids, #forgotten }

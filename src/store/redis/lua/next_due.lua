-- Replies with the first entry of each schedule, as the JSON it names
-- (false where the schedule is empty): the lease with the earliest expiry,
-- the lease with the earliest next revocation attempt, the open task with
-- the earliest deadline.
local function first(index, load)
  local head = redis.call('ZRANGE', index, 0, 0)
  if #head == 0 then return false end
  local raw = redis.call('GET', load(head[1]))
  if not raw then
    error('writ: a schedule names an entry that does not exist')
  end
  return raw
end
return {
  first(SCHEDULES.active, lease_key),
  first(SCHEDULES.revoking, lease_key),
  first(P .. 'deadlines', task_key),
}

-- ARGV: reason code, now, lease ids... Replies {'ok', {ids moved}, {ids
-- unknown}}. Unknown ids are left alone like leases in other states: the
-- caller asks for an end state, and a lease that does not exist is
-- already there (with shards, the caller looks for them in the others).
local reason, now = tonumber(ARGV[1]), ARGV[2]
local changes, moved, unknown, seen = {}, {}, {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    local raw = redis.call('HGET', LEASES, id)
    if raw then
      local lease = decode_lease(raw)
      if lease.state == 'pending' or lease.state == 'active' then
        plan_revoking(changes, id, lease, entries(id, lease), reason, now)
        table.insert(moved, id)
      end
    else
      table.insert(unknown, id)
    end
  end
end
apply(changes)
return { 'ok', moved, unknown }

-- ARGV: reason, now, now (ms), lease ids... Replies {'ok', {ids moved}}.
-- Unknown ids are left alone like leases in other states: the caller asks
-- for an end state, and a lease that does not exist is already there.
local reason, now, now_ms = ARGV[1], ARGV[2], ARGV[3]
local changes, moved, seen = {}, {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if not seen[id] then
    seen[id] = true
    local raw = redis.call('GET', lease_key(id))
    if raw then
      local lease = cjson.decode(raw)
      if lease.state == 'pending' or lease.state == 'active' then
        plan_revoking(changes, id, lease, reason, now, now_ms)
        table.insert(moved, id)
      end
    end
  end
end
apply(changes)
return { 'ok', moved }

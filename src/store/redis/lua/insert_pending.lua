-- ARGV: lease id, lease record, now (task time text), now (ms).
-- The task id and agent are read from the record.
local id, raw, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease = decode_lease(raw)
local refused = refusal(lease, now, now_ms)
if refused then
  return { refused }
end
if lease.state ~= 'pending' then
  return { 'lease_state', lease.state }
end
-- Overwriting would orphan the existing lease's index entries.
local existing = redis.call('HGET', LEASES, id)
if existing then
  return { 'lease_state', decode_lease(existing).state }
end
local new = entries(id, lease)
redis.call('HSET', LEASES, id, raw)
for _, entry in ipairs(new) do
  index_add(entry[1], entry[2])
end
return { 'ok' }

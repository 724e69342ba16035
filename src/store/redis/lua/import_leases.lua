-- Resharding (reshard.rs): writes leases moved from another shard, each
-- record as it was there, with its index entries. ARGV: id, record, id,
-- record, ... A lease here already is kept (a reshard run again).
-- Replies {'ok', how many were written}.
local adds, names, fields = {}, {}, {}
for i = 1, #ARGV, 2 do
  local id, raw = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', LEASES, id) == 0 then
    table.insert(fields, id)
    table.insert(fields, raw)
    for _, entry in ipairs(entries(id, decode_lease(raw))) do
      if not adds[entry[1]] then
        adds[entry[1]] = {}
        table.insert(names, entry[1])
      end
      table.insert(adds[entry[1]], entry[2])
    end
  end
end
for from = 1, #fields, 512 do
  redis.call('HSET', LEASES, unpack(fields, from, math.min(from + 511, #fields)))
end
for _, name in ipairs(names) do index_add_all(name, adds[name]) end
return { 'ok', #fields / 2 }

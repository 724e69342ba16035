-- ARGV: limit. Replies with sighting JSON, most recently seen first.
local fields = redis.call('ZREVRANGE', P .. 'sightings-seen', 0, tonumber(ARGV[1]) - 1)
local sightings = {}
for _, field in ipairs(fields) do
  local raw = redis.call('HGET', P .. 'sightings', field)
  if not raw then
    error('writ: the sighting index names a sighting that does not exist')
  end
  table.insert(sightings, raw)
end
return sightings

-- ARGV: sighting field, issuer, subject, now, now (ms).
local field, issuer, subject, now, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local raw = redis.call('HGET', P .. 'sightings', field)
local sighting
local moved = true
if raw then
  sighting = cjson.decode(raw)
  -- Callers' clocks may disagree a little: keep the widest span.
  if before(now, sighting.first_seen) then
    sighting.first_seen = now
  end
  if before(sighting.last_seen, now) then
    sighting.last_seen = now
  else
    moved = false
  end
  sighting.count = sighting.count + 1
else
  sighting = { issuer = issuer, subject = subject, first_seen = now, last_seen = now, count = 1 }
end
local json = cjson.encode(sighting)
redis.call('HSET', P .. 'sightings', field, json)
if moved then
  redis.call('ZADD', P .. 'sightings-seen', now_ms, field)
end
return { 'ok' }

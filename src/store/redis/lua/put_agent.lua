-- ARGV: agent name, the revision of the stored record this change was made
-- from ('' for a new agent), the new JSON.
-- Writes the record only if the stored one is still at that revision, so
-- of two concurrent changes one wins and the other reads again, and bumps
-- the inventory revision that replicas poll. (By revision, not by bytes: a
-- record another version wrote, with fields this one does not know, still
-- compares.)
-- Replies {'ok'}, {'exists'} for a new agent whose name is taken, or
-- {'changed'}.
local name, expected, new = ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('HGET', P .. 'registry', name)
if expected == '' then
  if current then
    return { 'exists' }
  end
elseif not current or tonumber(cjson.decode(current).revision) ~= tonumber(expected) then
  return { 'changed' }
end
redis.call('HSET', P .. 'registry', name, new)
redis.call('ZADD', P .. 'registry-names', 0, name)
redis.call('INCR', P .. 'registry-revision')
return { 'ok' }

-- ARGV: 'all' (every request in id order, starting after the id in ARGV[2]
-- or at the first when it is '') or 'open' (open requests, earliest due
-- first), limit.
-- Replies with the requests' JSON.
local which, after, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids
if which == 'open' then
  ids = redis.call('ZRANGE', P .. 'approvals-open', 0, limit - 1)
else
  local from = after == '' and '-' or ('(' .. after)
  ids = redis.call('ZRANGEBYLEX', P .. 'approvals', from, '+', 'LIMIT', 0, limit)
end
local rows = {}
for _, id in ipairs(ids) do
  local row = redis.call('GET', P .. 'approval:' .. id)
  if not row then
    error('writ: the approvals index names a request that does not exist')
  end
  rows[#rows + 1] = row
end
return rows

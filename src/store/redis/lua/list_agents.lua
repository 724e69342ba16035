-- ARGV: the name to start after ('' for the first), limit.
-- Replies with agent record JSON, in name (byte) order.
local after, limit = ARGV[1], tonumber(ARGV[2])
local from = after == '' and '-' or '(' .. after
local names = redis.call('ZRANGEBYLEX', P .. 'registry-names', from, '+', 'LIMIT', 0, limit)
local records = {}
for _, name in ipairs(names) do
  local raw = redis.call('HGET', P .. 'registry', name)
  if not raw then
    error('writ: the agent name index names an agent that has no record')
  end
  table.insert(records, raw)
end
return records

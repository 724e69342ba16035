-- ARGV: lock name (under the prefix), the holder's token, 'refresh' or
-- 'release', how long a refreshed lock lasts (ms). Only the holder
-- refreshes or releases a lock (closes.rs): one that lapsed and was taken
-- by another caller is left to that caller. Replies {'ok'} or {'not_held'}.
local key, token, action = P .. ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', key) ~= token then
  return { 'not_held' }
end
if action == 'refresh' then
  redis.call('PEXPIRE', key, ARGV[4])
else
  redis.call('DEL', key)
end
return { 'ok' }

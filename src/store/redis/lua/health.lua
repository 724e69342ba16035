-- A write to the namespace's own node: proves it is reachable, is a
-- primary, runs functions and takes writes (not out of memory, not
-- read-only). Marks a namespace in use with the layout this code reads and
-- writes (`begin` has checked that it holds no other).
if not redis.call('GET', P .. 'layout') then
  redis.call('SET', P .. 'layout', LAYOUT)
end
redis.call('SET', P .. 'health', 'ok')
return { 'ok' }

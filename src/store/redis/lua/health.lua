-- A write to the namespace's own node: proves it is reachable, is a
-- primary, runs functions and takes writes (not out of memory, not
-- read-only). (`begin` has checked the namespace's layout, and marked it
-- if it had no mark.)
redis.call('SET', P .. 'health', 'ok')
return { 'ok' }

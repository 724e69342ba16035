-- A write to the namespace's own node: proves it is reachable, is a
-- primary, runs scripts and takes writes (not out of memory, not read-only).
redis.call('SET', P .. 'health', 'ok')
return { 'ok' }

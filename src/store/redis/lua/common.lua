-- Helpers every Writ script starts with (see scripts.rs).
--
-- KEYS[1] is the namespace prefix, "writ:{<namespace>}:". It is passed as a
-- key so that Redis Cluster routes the script to the node serving the
-- namespace's hash slot; every key a script touches is built from it, so it
-- carries the same hash tag and lives in that same slot. Those keys are not
-- declared in KEYS (close_task, say, finds its leases as it goes); Redis
-- allows that within the declared key's slot, and refuses any other slot.
--
-- Scripts check everything first and write last: Redis does not roll a
-- script back when it fails half-way, so a failed check (returned as a
-- status) or a Lua error (corrupt data) must come before the first write.
local P = KEYS[1]

local function lease_key(id) return P .. 'lease:' .. id end
local function task_key(task_id) return P .. 'task:' .. task_id end
local function state_index(state) return P .. 'state:' .. state end

-- The schedule index a lease in each state is in, if any.
local SCHEDULES = { pending = P .. 'pending', active = P .. 'expiries', revoking = P .. 'queue' }

-- A time as chrono writes it ("2026-01-01T00:00:00.25Z") as two numbers that
-- order as the time does: the date, and the time of day in nanoseconds. Both
-- stay below 2^53, so Lua's doubles hold them exactly, and nothing here
-- depends on the server's locale as string comparison would.
local function instant(text)
  local year, month, day, hour, minute, second, fraction = string.match(text,
    '^([+-]?%d+)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)Z$')
  if not year or #fraction > 9 then
    error('writ: unreadable time in stored data')
  end
  local date = (tonumber(year) * 100 + tonumber(month)) * 100 + tonumber(day)
  local nanos = tonumber(fraction .. string.rep('0', 9 - #fraction))
  local clock = ((tonumber(hour) * 100 + tonumber(minute)) * 100 + tonumber(second)) * 1e9 + nanos
  return date, clock
end

-- Whether time `a` is strictly before time `b`.
local function before(a, b)
  local a_date, a_clock = instant(a)
  local b_date, b_clock = instant(b)
  return a_date < b_date or (a_date == b_date and a_clock < b_clock)
end

-- Whether lease id `a` sorts before `b`: byte order, which for the 16-byte
-- big-endian ids is id order. (Lua's `<` on strings uses the locale.)
local function id_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The lease stored under `id`; a Lua error (so nothing is written) if an
-- index names a lease that does not exist.
local function load_lease(id)
  local raw = redis.call('GET', lease_key(id))
  if not raw then
    error('writ: an index names a lease that does not exist')
  end
  return cjson.decode(raw)
end

-- cjson cannot tell an empty array from an empty object and writes `{}`
-- for both; `scopes` is the lease's only array. The pattern cannot match
-- inside a string value: there a quote after "scopes" would be escaped.
local function encode_lease(lease)
  local json = cjson.encode(lease)
  if type(lease.scopes) == 'table' and next(lease.scopes) == nil then
    json = string.gsub(json, '"scopes":{}', '"scopes":[]', 1)
  end
  return json
end

-- Plans writing `lease` (which was in `old_state`) under `id`. `score`, if
-- given, is its new place in its state's schedule index. Encoding happens
-- here, before any write.
local function plan_lease(changes, id, old_state, lease, score)
  table.insert(changes, { id = id, old = old_state, new = lease.state, json = encode_lease(lease), score = score })
end

-- Writes planned leases and moves their index entries: the state index,
-- and the schedule index of the old and new state. A lease's task and
-- agent never change, so neither do those indexes.
local function apply(changes)
  for _, change in ipairs(changes) do
    redis.call('SET', lease_key(change.id), change.json)
    if change.old ~= change.new then
      redis.call('ZREM', state_index(change.old), change.id)
      redis.call('ZADD', state_index(change.new), 0, change.id)
      if SCHEDULES[change.old] then
        redis.call('ZREM', SCHEDULES[change.old], change.id)
      end
    end
    if SCHEDULES[change.new] and change.score then
      redis.call('ZADD', SCHEDULES[change.new], change.score, change.id)
    end
  end
end

-- Plans moving a pending or active lease to revoking, due at `now`.
local function plan_revoking(changes, id, lease, reason, now, now_ms)
  local old_state = lease.state
  lease.state = 'revoking'
  lease.revocation = {
    reason = reason,
    requested_at = now,
    attempts = 0,
    next_attempt_at = now,
    last_error = cjson.null,
    completed_at = cjson.null,
    generation = 0,
  }
  plan_lease(changes, id, old_state, lease, now_ms)
end

-- A revocation's generation: bumped (as a u32, wrapping) whenever the
-- handle to revoke changes after it was queued; rows from before
-- generations existed have none, which reads as 0.
local function generation(revocation)
  return revocation.generation or 0
end

local function next_generation(revocation)
  return (generation(revocation) + 1) % 4294967296
end

-- Up to `limit` {id, lease} from the schedule index `index` with a score at
-- or below `max_ms`, in score order, that `accept` takes: the row's word
-- over the index's, and the exact time within the last millisecond.
local function due(index, max_ms, limit, accept)
  local found = {}
  local offset = 0
  while #found < limit do
    local batch = redis.call('ZRANGEBYSCORE', index, '-inf', max_ms, 'LIMIT', offset, limit)
    if #batch == 0 then break end
    for _, id in ipairs(batch) do
      local lease = load_lease(id)
      if accept(lease) then
        table.insert(found, { id, lease })
        if #found == limit then break end
      end
    end
    offset = offset + #batch
  end
  return found
end

-- The helpers every Writ function shares (see library.rs, which registers
-- each operation's body after them as the function `<library>_<operation>`,
-- called with ARGV as its argument).
--
-- The one key every function is called with is the namespace prefix,
-- "writ:{<namespace>}:". It is passed as a key so that Redis Cluster
-- routes the call to the node serving the namespace's hash slot; every key
-- a function touches is built from it, so it carries the same hash tag and
-- lives in that same slot. Those keys are not declared (close_task, say,
-- finds its leases as it goes); Redis allows that within the declared
-- key's slot, and refuses any other slot.
--
-- Functions check everything first and write last: Redis does not roll a
-- function back when it fails half-way, so a failed check (returned as a
-- status) or a Lua error (corrupt data) must come before the first write.
-- The one exception is the layout mark `begin` may write first, which is
-- right whatever the function then does.
--
-- The library's top-level locals live as long as the library: everything
-- that belongs to one call is set afresh by `begin` before the call runs.
local P, LEASES, SUSPENDED, SUSPENDED_PROVIDERS

local function task_key(task_id) return P .. 'task:' .. task_id end

-- Whether string `a` sorts before `b` in byte order (Lua's `<` on strings
-- uses the locale). Lease ids are 16 big-endian bytes and times 8 bytes
-- that sort as they should, so byte order is id order and time order.
-- This is the store's hottest Lua: eight bytes per `string.byte` call.
local function bytes_before(a, b)
  if a == b then return false end
  local shorter = math.min(#a, #b)
  local i = 1
  while i + 7 <= shorter do
    local a1, a2, a3, a4, a5, a6, a7, a8 = string.byte(a, i, i + 7)
    local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(b, i, i + 7)
    if a1 ~= b1 then return a1 < b1 end
    if a2 ~= b2 then return a2 < b2 end
    if a3 ~= b3 then return a3 < b3 end
    if a4 ~= b4 then return a4 < b4 end
    if a5 ~= b5 then return a5 < b5 end
    if a6 ~= b6 then return a6 < b6 end
    if a7 ~= b7 then return a7 < b7 end
    if a8 ~= b8 then return a8 < b8 end
    i = i + 8
  end
  for j = i, shorter do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- A task time as chrono writes it into task JSON ("2026-01-01T00:00:00.25Z")
-- as two numbers that order as the time does: the date, and the time of day
-- in nanoseconds. Both stay below 2^53, so Lua's doubles hold them exactly.
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

-- Whether task time `a` is strictly before task time `b`.
local function before(a, b)
  local a_date, a_clock = instant(a)
  local b_date, b_clock = instant(b)
  return a_date < b_date or (a_date == b_date and a_clock < b_clock)
end

---------------------------------------------------------------------------
-- Ordered indexes.
--
-- An index is a set of byte strings kept in byte order: lease ids (the
-- state, task and agent indexes) or a time followed by a lease id (the
-- schedules). A small one is one sorted set of score 0 under its own name,
-- which Redis keeps as a compact listpack. Past CHUNK members Redis would
-- switch it to a skiplist, at about 110 bytes a member, so instead it grows
-- chunks: `dir:<name>` lists the first member of each chunk after the base,
-- and chunk `chunk:<name>#<first member>` holds the members from there up
-- to the next chunk's first member. Each chunk stays within CHUNK members
-- and so stays a listpack, at about 20 bytes a member. Members have a fixed
-- length per index, so no two (name, first member) pairs spell one key.
--
-- The indexes of the passing states are never chunked: a lease is pending
-- while its mint runs and revoking while its revocation runs, so these hold
-- few members (a listpack already) except for the seconds after a mass
-- close, when a skiplist serves them as well. Adding to one is one ZADD,
-- with no chunk to locate, count or split; issuance moves every lease
-- through two of them, and claiming moves queue entries within one.
---------------------------------------------------------------------------
local CHUNK = 128
local PLAIN = { ['state:pending'] = true, pending = true, ['state:revoking'] = true, queue = true }
-- A limit that means "all of them" (Redis takes no infinite count).
local ALL = 1000000000

local function chunk_key(name, first) return P .. 'chunk:' .. name .. '#' .. first end
local function directory(name) return P .. 'dir:' .. name end

-- What this call has learnt of its indexes, so that a call that touches
-- many members of one chunk (closing a task, a sweep, a claim) looks the
-- chunk up once: per index, the chunk last located and the range of
-- members it takes; per chunk key, its member count. Only this call writes
-- while it runs, so both stay true until it changes them; `begin` forgets
-- them, since the next call may come after other writers.
local located, counts

local function count(key)
  local known = counts[key]
  if not known then
    known = redis.call('ZCARD', key)
    counts[key] = known
  end
  return known
end

-- The key of the chunk `member` belongs in, and its first member (nil for
-- the base).
local function locate(name, member)
  if PLAIN[name] then return P .. name, nil end
  local known = located[name]
  if known and (not known.first or not bytes_before(member, known.first))
    and (not known.next or bytes_before(member, known.next)) then
    return known.key, known.first
  end
  -- Most members are at the end (ids and times mostly grow), and most
  -- indexes have no chunks: both are settled by the last chunk alone.
  local first, following = redis.call('ZRANGE', directory(name), -1, -1)[1], nil
  if first and bytes_before(member, first) then
    first = redis.call('ZREVRANGEBYLEX', directory(name), '[' .. member, '-', 'LIMIT', 0, 1)[1]
    following = redis.call('ZRANGEBYLEX', directory(name), '(' .. member, '+', 'LIMIT', 0, 1)[1]
  end
  local key = first and chunk_key(name, first) or (P .. name)
  located[name] = { key = key, first = first, next = following }
  return key, first
end

-- `members` from `from` to `to` as ZADD takes them (score 0 each).
local function scored(members, from, to)
  local args = {}
  for i = from, to do
    args[#args + 1] = '0'
    args[#args + 1] = members[i]
  end
  return args
end

local function index_add(name, member)
  if PLAIN[name] then
    redis.call('ZADD', P .. name, '0', member)
    return
  end
  local key = locate(name, member)
  -- A full chunk is split before the add: a listpack that ever goes over
  -- the limit becomes a skiplist for good, even after it shrinks again.
  if count(key) >= CHUNK then
    if redis.call('ZSCORE', key, member) then return end
    if bytes_before(redis.call('ZRANGE', key, -1, -1)[1], member) then
      -- Past the chunk's end (ids and times mostly grow): a chunk of its
      -- own, leaving this one full.
      redis.call('ZADD', directory(name), 0, member)
    else
      local moved = redis.call('ZRANGE', key, CHUNK / 2, -1)
      redis.call('ZADD', chunk_key(name, moved[1]), unpack(scored(moved, 1, #moved)))
      redis.call('ZREMRANGEBYRANK', key, CHUNK / 2, -1)
      redis.call('ZADD', directory(name), 0, moved[1])
      counts[key], counts[chunk_key(name, moved[1])] = CHUNK / 2, #moved
    end
    located[name] = nil
    key = locate(name, member)
  end
  local before = count(key)
  counts[key] = before + redis.call('ZADD', key, '0', member)
end

local function index_remove(name, member)
  if PLAIN[name] then
    redis.call('ZREM', P .. name, member)
    return
  end
  local key, first = locate(name, member)
  if redis.call('ZREM', key, member) == 0 then return end
  -- The base may be empty; a chunk that empties leaves the directory.
  if not first then
    if counts[key] then counts[key] = counts[key] - 1 end
    return
  end
  counts[key] = counts[key] and counts[key] - 1 or redis.call('ZCARD', key)
  if counts[key] == 0 then
    redis.call('ZREM', directory(name), first)
    located[name], counts[key] = nil, nil
  end
end

-- Whether `members` are in strictly increasing byte order.
local function ascending(members)
  for i = 2, #members do
    if not bytes_before(members[i - 1], members[i]) then return false end
  end
  return true
end

-- For ascending `members`, from `members[i]` on: the key and first member
-- of the chunk `members[i]` goes to, and the index just past the members
-- that go there too (found by bisection against the next chunk's first).
local function run_of(name, members, i)
  local key, first = locate(name, members[i])
  local bound = located[name].next
  if not bound then return key, first, #members + 1 end
  local low, high = i + 1, #members + 1
  while low < high do
    local middle = math.floor((low + high) / 2)
    if bytes_before(members[middle], bound) then low = middle + 1 else high = middle end
  end
  return key, first, low
end

-- Removes `members` from index `name`: one ZREM per chunk they are in.
local function index_remove_all(name, members)
  if PLAIN[name] then
    for from = 1, #members, 512 do
      redis.call('ZREM', P .. name, unpack(members, from, math.min(from + 511, #members)))
    end
    return
  end
  if not ascending(members) then
    for _, member in ipairs(members) do index_remove(name, member) end
    return
  end
  local i = 1
  while members[i] do
    local key, first, following = run_of(name, members, i)
    local removed = 0
    for from = i, following - 1, 512 do
      removed = removed + redis.call('ZREM', key, unpack(members, from, math.min(from + 511, following - 1)))
    end
    if counts[key] then counts[key] = counts[key] - removed end
    if first and removed > 0 and count(key) == 0 then
      redis.call('ZREM', directory(name), first)
      located[name], counts[key] = nil, nil
    end
    i = following
  end
end

-- Adds `members` to index `name`: one ZADD per chunk with room for them,
-- one member at a time (splitting chunks as it goes) where there is none.
local function index_add_all(name, members)
  if PLAIN[name] then
    for from = 1, #members, 256 do
      redis.call('ZADD', P .. name, unpack(scored(members, from, math.min(from + 255, #members))))
    end
    return
  end
  if not ascending(members) then
    for _, member in ipairs(members) do index_add(name, member) end
    return
  end
  local i = 1
  while members[i] do
    local key, _, following = run_of(name, members, i)
    local room = math.max(0, CHUNK - count(key))
    if following - i <= room then
      counts[key] = counts[key] + redis.call('ZADD', key, unpack(scored(members, i, following - 1)))
    elseif not located[name].next and (room == CHUNK
      or bytes_before(redis.call('ZRANGE', key, -1, -1)[1], members[i])) then
      -- Past the end of the last chunk (the usual case: ids and times
      -- grow): fill it, then new full chunks, as index_add would one by one.
      if room > 0 then
        counts[key] = counts[key] + redis.call('ZADD', key, unpack(scored(members, i, i + room - 1)))
      end
      for from = i + room, following - 1, CHUNK do
        local to = math.min(from + CHUNK - 1, following - 1)
        local chunk = chunk_key(name, members[from])
        redis.call('ZADD', chunk, unpack(scored(members, from, to)))
        redis.call('ZADD', directory(name), '0', members[from])
        counts[chunk] = to - from + 1
      end
      located[name] = nil
    else
      for j = i, following - 1 do index_add(name, members[j]) end
    end
    i = following
  end
end

-- Up to `limit` members after `after` (nil: from the first) and within
-- `max` (a ZRANGEBYLEX bound: '[x', '(x' or '+'), in order.
local function index_range(name, after, max, limit)
  local found = {}
  local key, first = locate(name, after or '')
  local min = after and ('(' .. after) or '-'
  local starting = true
  while #found < limit do
    local batch = redis.call('ZRANGEBYLEX', key, min, max, 'LIMIT', 0, limit - #found)
    for _, member in ipairs(batch) do table.insert(found, member) end
    -- A later chunk is never empty, and all of it is after `after`: if none
    -- of it is within `max`, no chunk after it is either.
    if #batch == 0 and not starting then break end
    if #found >= limit or PLAIN[name] then break end
    first = redis.call('ZRANGEBYLEX', directory(name), first and ('(' .. first) or '-', '+', 'LIMIT', 0, 1)[1]
    if not first then break end
    key, starting = chunk_key(name, first), false
  end
  return found
end

-- About how many members an index holds: enough to pick the smallest.
local function index_size(name)
  local chunks = redis.call('ZCARD', directory(name))
  return redis.call('ZCARD', P .. name) + chunks * CHUNK
end

---------------------------------------------------------------------------
-- Lease records (record.rs has the format and its reasons).
---------------------------------------------------------------------------
local STATES = { [0] = 'pending', 'active', 'revoking', 'revoked', 'failed' }
local STATE_CODES = { pending = 0, active = 1, revoking = 2, revoked = 3, failed = 4 }
local MINT_FAILED = 4
-- Revocation reasons as task JSON names them, by their record code
-- (record.rs, REASONS).
local REASON_CODES = {
  task_closed = 0, deadline_passed = 1, expired = 2, released = 3,
  mint_failed = 4, abandoned = 5, operator = 6, agent_suspended = 7,
  agent_retired = 8, provider_suspended = 9,
}
local DEADLINE_PASSED, AGENT_SUSPENDED, PROVIDER_SUSPENDED = 1, 7, 9

local function corrupt() error('writ: a lease record is damaged or in an unknown format') end

local function read_string(raw, pos)
  local length = string.byte(raw, pos)
  if not length then corrupt() end
  if length == 255 then
    length = struct.unpack('>I4', raw, pos + 1)
    pos = pos + 4
  end
  if pos + length > #raw then corrupt() end
  return string.sub(raw, pos + 1, pos + length), pos + 1 + length
end

-- Where the string at `pos` ends, without copying it.
local function skip_string(raw, pos)
  local length = string.byte(raw, pos)
  if not length then corrupt() end
  if length == 255 then
    if pos + 4 > #raw then corrupt() end
    length = struct.unpack('>I4', raw, pos + 1)
    pos = pos + 4
  end
  if pos + length > #raw then corrupt() end
  return pos + 1 + length
end

local function write_string(text)
  if #text < 255 then return string.char(#text) .. text end
  return '\255' .. struct.pack('>I4', #text) .. text
end

local function read_time(raw, pos)
  if pos + 7 > #raw then corrupt() end
  return string.sub(raw, pos, pos + 7), pos + 8
end

local function read_optional(raw, pos, read)
  local flag = string.byte(raw, pos)
  if flag == 0 then return false, pos + 1 end
  if flag ~= 1 then corrupt() end
  return read(raw, pos + 1)
end

local function write_optional(value, write)
  if not value then return '\0' end
  return '\1' .. write(value)
end

local function same(value) return value end

-- A record as a table. Times stay 8-byte strings, the handle stays as
-- stored; what no script changes after the task id is kept whole as `rest`.
local function decode_lease(raw)
  local head = string.byte(raw, 1) or 0
  if math.floor(head / 32) ~= 1 then corrupt() end
  local lease = { state = STATES[head % 8] }
  if not lease.state then corrupt() end
  local pos = 2
  lease.created, pos = read_time(raw, pos)
  lease.expires, pos = read_time(raw, pos)
  lease.issued = false
  if math.floor(head / 8) % 2 == 1 then
    lease.issued, pos = read_time(raw, pos)
  end
  lease.revocation = false
  if math.floor(head / 16) % 2 == 1 then
    local revocation = { reason = string.byte(raw, pos) }
    revocation.requested, pos = read_time(raw, pos + 1)
    if pos + 3 > #raw then corrupt() end
    revocation.attempts, pos = struct.unpack('>I4', raw, pos)
    revocation.next, pos = read_time(raw, pos)
    if pos + 3 > #raw then corrupt() end
    revocation.generation, pos = struct.unpack('>I4', raw, pos)
    revocation.completed, pos = read_optional(raw, pos, read_time)
    revocation.last_error, pos = read_optional(raw, pos, read_string)
    lease.revocation = revocation
  end
  local handle_at = pos
  pos = skip_string(raw, skip_string(raw, pos))
  lease.handle = string.sub(raw, handle_at, pos - 1)
  lease.agent, pos = read_string(raw, pos)
  lease.task, pos = read_string(raw, pos)
  -- The rest is not changed here, only checked: provider, role, scopes (a
  -- count, then each); the tool is what is left.
  local rest_at = pos
  lease.provider = read_string(raw, pos)
  pos = skip_string(raw, skip_string(raw, pos))
  local scopes = string.byte(raw, pos)
  if not scopes then corrupt() end
  if scopes == 255 then
    if pos + 4 > #raw then corrupt() end
    scopes = struct.unpack('>I4', raw, pos + 1)
    pos = pos + 4
  end
  pos = pos + 1
  for _ = 1, scopes do
    pos = skip_string(raw, pos)
  end
  lease.rest = string.sub(raw, rest_at)
  return lease
end

local function encode_lease(lease)
  local head = 32 + STATE_CODES[lease.state]
  if lease.revocation then head = head + 16 end
  if lease.issued then head = head + 8 end
  local parts = { string.char(head), lease.created, lease.expires, lease.issued or '' }
  local revocation = lease.revocation
  if revocation then
    table.insert(parts, string.char(revocation.reason) .. revocation.requested
      .. struct.pack('>I4', revocation.attempts) .. revocation.next
      .. struct.pack('>I4', revocation.generation)
      .. write_optional(revocation.completed, same)
      .. write_optional(revocation.last_error, write_string))
  end
  table.insert(parts, lease.handle)
  table.insert(parts, write_string(lease.agent))
  table.insert(parts, write_string(lease.task))
  table.insert(parts, lease.rest)
  return table.concat(parts)
end

-- The schedule a lease in each state is in, and the time it is due by:
-- a pending lease is abandoned after a while, an active one expires, a
-- revoking one is attempted, a finished one is forgotten.
local SCHEDULES = {
  pending = { 'pending', function(lease) return lease.created end },
  active = { 'expiries', function(lease) return lease.expires end },
  revoking = { 'queue', function(lease) return lease.revocation.next end },
  revoked = { 'finished', function(lease) return lease.revocation.completed end },
  failed = { 'finished', function(lease) return lease.revocation.completed end },
}

-- Every index entry a lease has: {index name, member}. Its task and agent
-- never change, its state and schedule entry do.
local function entries(id, lease)
  local schedule = SCHEDULES[lease.state]
  if (lease.state ~= 'pending' and lease.state ~= 'active') and type(lease.revocation) ~= 'table' then
    error('writ: a lease in state ' .. lease.state .. ' has no revocation record')
  end
  local due = schedule[2](lease)
  if not due then error('writ: a finished lease has no completion time') end
  return {
    { 'state:' .. lease.state, id },
    { schedule[1], due .. id },
    { 'task-leases:' .. lease.task, id },
    { 'agent-leases:' .. lease.agent, id },
  }
end

-- The lease stored under `id` and its index entries; a Lua error (so
-- nothing is written) if an index names a lease that does not exist.
local function load_lease(id)
  local raw = redis.call('HGET', LEASES, id)
  if not raw then
    error('writ: an index names a lease that does not exist')
  end
  local lease = decode_lease(raw)
  return lease, entries(id, lease)
end

-- Plans writing `lease` under `id`, whose index entries were `old`.
-- Encoding happens here, before any write.
local function plan_lease(changes, id, old, lease)
  table.insert(changes, { id = id, old = old, new = entries(id, lease), raw = encode_lease(lease) })
end

-- Writes planned leases and moves the index entries that changed: all
-- records first, then per index every removal, then every addition, in
-- runs that share a chunk (a close or a claim moves hundreds of entries
-- of one index, mostly neighbours).
local function apply(changes)
  local fields, moves, names = {}, {}, {}
  local function move(name)
    local found = moves[name]
    if not found then
      found = { removes = {}, adds = {} }
      moves[name] = found
      table.insert(names, name)
    end
    return found
  end
  for _, change in ipairs(changes) do
    table.insert(fields, change.id)
    table.insert(fields, change.raw)
    for i, new in ipairs(change.new) do
      local old = change.old[i]
      if old[1] ~= new[1] or old[2] ~= new[2] then
        table.insert(move(old[1]).removes, old[2])
        table.insert(move(new[1]).adds, new[2])
      end
    end
  end
  -- A bounded number of arguments per command (Lua's stack is limited).
  for from = 1, #fields, 512 do
    redis.call('HSET', LEASES, unpack(fields, from, math.min(from + 511, #fields)))
  end
  for _, name in ipairs(names) do index_remove_all(name, moves[name].removes) end
  for _, name in ipairs(names) do index_add_all(name, moves[name].adds) end
end

-- Plans moving a pending or active lease to revoking, due at `now`.
local function plan_revoking(changes, id, lease, old, reason, now)
  lease.state = 'revoking'
  lease.revocation = {
    reason = reason, requested = now, attempts = 0, next = now,
    generation = 0, completed = false, last_error = false,
  }
  plan_lease(changes, id, old, lease)
end

-- A revocation's generation: bumped (as a u32, wrapping) whenever the
-- handle to revoke changes after it was queued.
local function next_generation(revocation)
  return (revocation.generation + 1) % 4294967296
end

-- The bound of a schedule that takes everything due at or before `at`.
local function due_by(at) return '[' .. at .. string.rep('\255', 16) end

-- Up to `limit` {id, lease, entries} from schedule `name` within `max`, in
-- time order. A schedule entry is the due time (8 bytes) and the lease id.
local function due(name, max, limit)
  local found = {}
  for _, member in ipairs(index_range(name, nil, max, limit)) do
    local id = string.sub(member, 9)
    local lease, old = load_lease(id)
    if old[2][1] ~= name or old[2][2] ~= member then
      error('writ: a schedule entry disagrees with its lease')
    end
    table.insert(found, { id, lease, old })
  end
  return found
end

-- Why nothing may be issued under `lease` now, if so: a status
-- ('task_not_found', 'task_closed', 'agent_suspended' or, for a lease with
-- a provider, 'provider_suspended') and the reason to
-- revoke the lease with; nil if it may. `now` is a task time (text) and
-- `now_ms` its milliseconds. `deadlines` holds every open task with its
-- deadline in whole ms (rounded down): a later ms settles it without
-- reading the task.
local function refusal(lease, now, now_ms)
  local deadline_ms = redis.call('ZSCORE', P .. 'deadlines', lease.task)
  if not deadline_ms or tonumber(deadline_ms) <= now_ms then
    local task_raw = redis.call('GET', task_key(lease.task))
    if not task_raw then
      return 'task_not_found', REASON_CODES.task_closed
    end
    local task = cjson.decode(task_raw)
    if task.state ~= 'open' then
      local closed = type(task.closed) == 'table' and REASON_CODES[task.closed.reason]
      return 'task_closed', closed or REASON_CODES.task_closed
    end
    if not before(now, task.deadline) then
      return 'task_closed', DEADLINE_PASSED
    end
  end
  if redis.call('SISMEMBER', SUSPENDED, lease.agent) == 1 then
    return 'agent_suspended', AGENT_SUSPENDED
  end
  if lease.provider and redis.call('SISMEMBER', SUSPENDED_PROVIDERS, lease.provider) == 1 then
    return 'provider_suspended', PROVIDER_SUSPENDED
  end
  return nil
end

---------------------------------------------------------------------------
-- Registration.
---------------------------------------------------------------------------

-- The layout of a namespace's keys that this code reads and writes
-- (keys.rs). A namespace is marked with it on first use (health.lua).
-- Layout 3 is layout 2 with agents' states (`agents`, `suspended`,
-- `closing-agents`); layout 4 is layout 3 with providers' states
-- (`providers`, `suspended-providers`, `closing-providers`) and the
-- revocation reasons `agent_retired` and `provider_suspended`. This code
-- reads and writes a layout 2 or 3 namespace as it is, and raises the mark
-- only as far as what it writes needs (`needs_layout`): 3 for an agent's
-- suspension or resumption, 4 for a retirement or a provider's state.
-- Older code, which would not honour it, then refuses the namespace; a
-- mixed fleet keeps serving until the first such write.
local LAYOUT = '4'
-- Layout 5 marks the home of a namespace spread over shards (keys.rs; set
-- by the store when it opens one): layout 4 keys, but tasks and leases in
-- the shards, which code from before shards would not find, so it refuses
-- such a home. This code reads it as layout 4.
local UPGRADES_FROM = { ['2'] = true, ['3'] = true, ['5'] = true }

-- Raises the namespace's mark to `version` ('3' or '4') if it is lower,
-- before the write that needs it.
local function needs_layout(version)
  local mark = redis.call('GET', P .. 'layout')
  if not mark or mark < version then
    redis.call('SET', P .. 'layout', version)
  end
end

-- Sets up a call: its namespace and a fresh cache. Refuses (before
-- anything is read or written) a namespace in another layout: one marked
-- so, or one holding leases, open tasks or a close under way but no mark
-- (layout 1 had none). A function
-- that writes marks a namespace that has no mark yet (it is new, or Redis
-- lost everything), before it writes anything else.
local function begin(keys, writes)
  if #keys ~= 1 then error('writ: a function takes exactly one key, the namespace prefix') end
  P = keys[1]
  LEASES = P .. 'leases'
  SUSPENDED = P .. 'suspended'
  SUSPENDED_PROVIDERS = P .. 'suspended-providers'
  located, counts = {}, {}
  local mark = redis.call('GET', P .. 'layout')
  if mark == LAYOUT then return end
  if mark and UPGRADES_FROM[mark] then return end
  if mark or redis.call('EXISTS', LEASES, P .. 'deadlines', P .. 'closing', P .. 'agents') > 0 then
    error('writ layout: the namespace holds data in layout ' .. (mark or '1')
      .. ', written by another version of Writ; this one reads layout ' .. LAYOUT
      .. ' (docs/operations.md, "Upgrading on Redis")')
  end
  if writes then redis.call('SET', P .. 'layout', LAYOUT) end
end

-- Registers `body(ARGV)` as the function `<library>_<operation>`.
local function register(operation, flags, body)
  local writes = flags[1] ~= 'no-writes'
  redis.register_function {
    function_name = LIBRARY .. '_' .. operation,
    flags = flags,
    callback = function(keys, args)
      begin(keys, writes)
      return body(args)
    end,
  }
end

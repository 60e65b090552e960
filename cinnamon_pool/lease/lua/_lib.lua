-- _lib.lua: prepended to every script of this folder (see scripts.py).
-- Every script receives the same two KEYS, the pool's prefix and the caller's host's leader key;
-- scripts.py puts the generated `local K_... = KEYS[1] .. 'name'` lines (from SCRIPT_KEYS in
-- cinnamon_pool/keys.py) above this file. The key schema (what each key holds) is in keys.py.
-- Time comes from the server (TIME), never from a client.
--
-- Cost (`python -m tests.bench.lua_cost`): a lease pair runs 775k instructions in Redis, the
-- minimal Lua pair 94k.
-- Numbers sent to redis.call or written to the stream go as text made without tostring (Lua's
-- number-to-text is a printf, ~5k instructions); the values read from Redis are checked by
-- functions, not by tables built on every call.

local time = redis.call('TIME')
local NOW = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local NOW_TEXT = time[1] .. string.sub(string.rep('0', 6 - #time[2]) .. time[2], 1, 3)  -- NOW, from TIME's text
local EVENTS_MAXLEN = '100000'
local WAKE_TTL_MS = '60000'

-- A whole number as text (%d), anything else as tostring makes it.
local function as_text(value)
  local kind = type(value)
  if kind == 'string' then return value end
  if kind == 'number' and value % 1 == 0 then return string.format('%d', value) end
  return tostring(value)
end

-- Supervisor scripts take the caller's leader id; '' means no election (tests, one supervisor).
-- A deposed leader's writes are refused, so a paused supervisor that wakes up changes nothing.
local function is_leader(id)
  return id == '' or redis.call('GET', K_LEADER) == id
end

local function emit(kind, name, fields)  -- `fields`: a table of its own, made text in place
  fields = fields or {}
  for i = 1, #fields do fields[i] = as_text(fields[i]) end
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'kind', kind, 'name', name, 'at_ms', NOW_TEXT, unpack(fields))
end

-- `fields` with each optional (field, value) pair after it whose value is neither '' nor nil: an
-- optional field not written reads as '' or 0 (events.py), and each one written costs XADD.
local function optional(fields, ...)
  for i = 1, select('#', ...), 2 do
    local field, value = select(i, ...)
    if value ~= '' and value ~= nil then
      fields[#fields + 1] = field
      fields[#fields + 1] = value
    end
  end
  return fields
end

local function counts()
  return {
    total = redis.call('HLEN', K_CONTAINERS),
    available = redis.call('ZCARD', K_FREE),
    allocated = redis.call('HLEN', K_LEASES),
    waiting = redis.call('ZCARD', K_WAITERS),
  }
end

-- Values in Redis may have been written by anyone with access to the pool's keys: a value
-- that is not a JSON object with the fields a script needs (`complete` says) counts as absent,
-- never as an error that would stop every script (the supervisor reports and drops such values).
local function decode(raw, complete)
  if type(raw) ~= 'string' then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if not ok or type(value) ~= 'table' or not complete(value) then return nil end
  return value
end

local function has(value, kind, ...)  -- every named field of `value` is of type `kind`
  for i = 1, select('#', ...) do
    if type(value[select(i, ...)]) ~= kind then return false end
  end
  return true
end

local function is_record(v) return has(v, 'string', 'name', 'container_id', 'endpoint', 'host') and has(v, 'number', 'slot') end
local function is_lease(v) return has(v, 'string', 'token') and has(v, 'number', 'granted_ms', 'expires_ms', 'cap_ms') end
local function is_holder(v)
  return has(v, 'string', 'test_run_id', 'job_id', 'worker', 'random') and has(v, 'number', 'ttl_ms', 'cap_ms')
end
local function is_grant(v) return has(v, 'string', 'name', 'token') end

local function get_record(name)
  local rec = decode(redis.call('HGET', K_CONTAINERS, name), is_record)
  if rec and rec.name ~= name then return nil end
  return rec
end

local function get_lease(name)
  local lease = decode(redis.call('HGET', K_LEASES, name), is_lease)
  if lease then
    lease.test_run_id = tostring(lease.test_run_id or '')
    lease.ticket = type(lease.ticket) == 'string' and lease.ticket or ''
  end
  return lease
end

local function put_record(rec)
  redis.call('HSET', K_CONTAINERS, rec.name, cjson.encode(rec))
end

-- The routine moves (available <-> allocated) are told by the granted/released events
-- themselves; every other change of state gets a 'state' event of its own.
-- (preparing: released, while the gateway prepares the next job's session; see prepared.lua)
local function routine(old, new)
  if old == 'allocated' then return new == 'available' or new == 'preparing' end
  return (old == 'available' and new == 'allocated') or (old == 'preparing' and (new == 'available' or new == 'allocated'))
end

local function set_state(rec, state, reason)
  local old = rec.state
  local is_routine = routine(old, state)
  rec.state = state
  -- why it is draining or restarting, kept in the record so a new supervisor knows too; a
  -- drained container keeps the reason it was drained for when it goes on to restart
  if not is_routine and not (old == 'draining' and state == 'restarting') then
    rec.reason = reason or ''
  end
  put_record(rec)
  if old ~= state and not is_routine then
    emit('state', rec.name, {'from', old or '', 'to', state, 'reason', reason or ''})
  end
end

local function token_epoch(token)
  return string.match(token, '^([^:]+):')
end

local function drop_ticket(ticket)
  redis.call('ZREM', K_WAITERS, ticket)
  redis.call('ZREM', K_WAITER_DL, ticket)
  redis.call('HDEL', K_TICKETS, ticket)
end

local function purge_dead_waiters()
  local dead = redis.call('ZRANGEBYSCORE', K_WAITER_DL, '-inf', NOW)
  for _, ticket in ipairs(dead) do
    drop_ticket(ticket)
    emit('waiter_gone', '', {'ticket', ticket})
  end
end

local function revoke_lease(name, reason)
  if redis.call('HEXISTS', K_LEASES, name) == 0 then return false end
  local lease = get_lease(name) or {token = '', test_run_id = '', ticket = '', granted_ms = NOW}
  redis.call('HDEL', K_LEASES, name)
  redis.call('ZREM', K_EXPIRIES, name)
  if lease.ticket ~= '' then redis.call('HDEL', K_HANDOFFS, lease.ticket) end
  emit('revoked', name, {'token', lease.token, 'test_run_id', lease.test_run_id, 'reason', reason,
                         'duration_ms', NOW - lease.granted_ms})
  return true
end

-- Grant `rec` to `holder` (a table with test_run_id, job_id, worker, ttl_ms, cap_ms, random,
-- and optionally artifacts: the holder's trace policy, read by the gateway at the lease's end).
-- `epoch`: the pool's, when the caller has read it already.
local function grant(rec, holder, epoch)
  local generation = redis.call('HINCRBY', K_META, 'generation', '1')
  local token = (epoch or redis.call('HGET', K_META, 'epoch')) .. ':' .. as_text(generation) .. ':' .. holder.random
  local cap = NOW + holder.cap_ms
  local lease = {
    token = token, test_run_id = holder.test_run_id, job_id = holder.job_id, worker = holder.worker,
    granted_ms = NOW, renewed_ms = NOW, expires_ms = math.min(NOW + holder.ttl_ms, cap), cap_ms = cap,
    ticket = holder.ticket or '', artifacts = type(holder.artifacts) == 'string' and holder.artifacts or '',
  }
  redis.call('HSET', K_LEASES, rec.name, cjson.encode(lease))
  redis.call('ZADD', K_EXPIRIES, as_text(lease.expires_ms), rec.name)
  set_state(rec, 'allocated', 'granted')
  local waited = 0
  if holder.queued_ms then waited = NOW - holder.queued_ms end
  -- 'ticket' names the queue entry this grant served ('' when the acquirer never queued).
  emit('granted', rec.name, optional({'token', token, 'test_run_id', holder.test_run_id,
                                      'available', redis.call('ZCARD', K_FREE), 'wait_ms', waited},
                                     'job_id', holder.job_id, 'worker', holder.worker, 'ticket', holder.queued_ticket))
  return cjson.encode({
    name = rec.name, container_id = rec.container_id, endpoint = rec.endpoint, host = rec.host,
    slot = rec.slot, token = token, test_run_id = holder.test_run_id, granted_ms = NOW,
    expires_ms = lease.expires_ms, cap_ms = cap, now_ms = NOW,
  })
end

-- A container is ready to serve: hand it to the oldest live waiter, else put it in the free set.
-- Returns the ticket it was handed to, or false.
local function offer(rec, reason)
  if redis.call('EXISTS', K_DRAINING) == 1 then
    set_state(rec, 'restarting', 'pool draining')
    redis.call('ZREM', K_FREE, rec.name)
    return false
  end
  local head, holder
  if redis.call('ZCARD', K_WAITERS) > 0 then  -- waiters' bookkeeping only when there are some
    purge_dead_waiters()
    repeat  -- a ticket whose holder is not readable is dropped, not served
      head = redis.call('ZRANGE', K_WAITERS, 0, 0)[1]
      holder = head and decode(redis.call('HGET', K_TICKETS, head), is_holder)
      if head and not holder then
        drop_ticket(head)
        emit('waiter_gone', '', {'ticket', head, 'reason', 'unreadable ticket'})
      end
    until holder or not head
  end
  if head then
    redis.call('ZREM', K_FREE, rec.name)  -- in the free set when it registered again while free
    holder.queued_ticket = head
    local granted = grant(rec, holder)
    -- The grant rides on the wake list, so the woken waiter has it without another round
    -- trip; the handoffs entry serves a waiter that retries acquire instead (lost reply).
    redis.call('HSET', K_HANDOFFS, head, granted)
    drop_ticket(head)
    local wake = K_WAKE .. head
    redis.call('RPUSH', wake, granted)
    redis.call('PEXPIRE', wake, WAKE_TTL_MS)
    return head
  end
  redis.call('ZADD', K_FREE, NOW_TEXT, rec.name)
  set_state(rec, 'available', reason)
  return false
end

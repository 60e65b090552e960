-- _lib.lua: prepended to every script of this folder (see scripts.py).
-- Every script receives the same two KEYS, the pool's prefix and the caller's host's leader key;
-- scripts.py puts the generated `local K_... = KEYS[1] .. 'name'` lines (from SCRIPT_KEYS in
-- cinnamon_pool/keys.py) above this file. The key schema (what each key holds) is in keys.py.
-- Time comes from the server (TIME), never from a client.

local time = redis.call('TIME')
local NOW = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local EVENTS_MAXLEN = 100000
local WAKE_TTL_MS = 60000

-- Supervisor scripts take the caller's leader id; '' means no election (tests, one supervisor).
-- A deposed leader's writes are refused, so a paused supervisor that wakes up changes nothing.
local function is_leader(id)
  return id == '' or redis.call('GET', K_LEADER) == id
end

local function emit(kind, name, fields)
  local entry = {'kind', kind, 'name', name, 'at_ms', tostring(NOW)}
  for _, value in ipairs(fields or {}) do entry[#entry + 1] = tostring(value) end
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', unpack(entry))
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
-- that is not a JSON object with the fields a script needs counts as absent, never as an error
-- that would stop every script (the supervisor reports and drops such values).
local function decode(raw, required)
  if type(raw) ~= 'string' then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if not ok or type(value) ~= 'table' then return nil end
  for field, kind in pairs(required) do
    if type(value[field]) ~= kind then return nil end
  end
  return value
end

local RECORD_FIELDS = {name = 'string', container_id = 'string', endpoint = 'string', host = 'string', slot = 'number'}
local LEASE_FIELDS = {token = 'string', granted_ms = 'number', expires_ms = 'number', cap_ms = 'number'}
local HOLDER_FIELDS = {test_run_id = 'string', job_id = 'string', worker = 'string', ttl_ms = 'number', cap_ms = 'number',
                       random = 'string'}
local GRANT_FIELDS = {name = 'string', token = 'string'}

local function get_record(name)
  local rec = decode(redis.call('HGET', K_CONTAINERS, name), RECORD_FIELDS)
  if rec and rec.name ~= name then return nil end
  return rec
end

local function get_lease(name)
  local lease = decode(redis.call('HGET', K_LEASES, name), LEASE_FIELDS)
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
local ROUTINE = {['available>allocated'] = true, ['allocated>available'] = true, ['allocated>preparing'] = true,
                 ['preparing>available'] = true, ['preparing>allocated'] = true}

local function set_state(rec, state, reason)
  local old = rec.state
  local routine = ROUTINE[tostring(old) .. '>' .. state]
  rec.state = state
  -- why it is draining or restarting, kept in the record so a new supervisor knows too; a
  -- drained container keeps the reason it was drained for when it goes on to restart
  if not routine and not (old == 'draining' and state == 'restarting') then
    rec.reason = reason or ''
  end
  put_record(rec)
  if old ~= state and not routine then
    emit('state', rec.name, {'from', old, 'to', state, 'reason', reason or ''})
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
local function grant(rec, holder)
  local generation = redis.call('HINCRBY', K_META, 'generation', 1)
  local token = redis.call('HGET', K_META, 'epoch') .. ':' .. generation .. ':' .. holder.random
  local cap = NOW + holder.cap_ms
  local lease = {
    token = token, test_run_id = holder.test_run_id, job_id = holder.job_id, worker = holder.worker,
    granted_ms = NOW, renewed_ms = NOW, expires_ms = math.min(NOW + holder.ttl_ms, cap), cap_ms = cap,
    ticket = holder.ticket or '', artifacts = type(holder.artifacts) == 'string' and holder.artifacts or '',
  }
  redis.call('HSET', K_LEASES, rec.name, cjson.encode(lease))
  redis.call('ZADD', K_EXPIRIES, lease.expires_ms, rec.name)
  redis.call('ZREM', K_FREE, rec.name)
  set_state(rec, 'allocated', 'granted')
  local waited = 0
  if holder.queued_ms then waited = NOW - holder.queued_ms end
  -- 'ticket' names the queue entry this grant served ('' when the acquirer never queued).
  emit('granted', rec.name, {'token', token, 'test_run_id', holder.test_run_id, 'job_id', holder.job_id,
                             'worker', holder.worker, 'available', redis.call('ZCARD', K_FREE), 'wait_ms', waited,
                             'ticket', holder.queued_ticket or ''})
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
  purge_dead_waiters()
  local head, holder
  repeat  -- a ticket whose holder is not readable is dropped, not served
    head = redis.call('ZRANGE', K_WAITERS, 0, 0)[1]
    holder = head and decode(redis.call('HGET', K_TICKETS, head), HOLDER_FIELDS)
    if head and not holder then
      drop_ticket(head)
      emit('waiter_gone', '', {'ticket', head, 'reason', 'unreadable ticket'})
    end
  until holder or not head
  if head then
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
  redis.call('ZADD', K_FREE, NOW, rec.name)
  set_state(rec, 'available', reason)
  return false
end

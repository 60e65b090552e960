-- _lib.lua: prepended to every script of this folder (see scripts.py).
-- Every script receives the same KEYS, in this order, all built by cinnamon_pool/keys.py:
--   KEYS[1]  meta          hash    epoch, generation, ticket_seq
--   KEYS[2]  containers    hash    name -> record JSON
--   KEYS[3]  free          zset    name -> ms it became free
--   KEYS[4]  leases        hash    name -> lease JSON
--   KEYS[5]  expiries      zset    name -> lease expiry ms
--   KEYS[6]  last_tokens   hash    name -> token of the last released lease
--   KEYS[7]  waiters       zset    ticket -> sequence number
--   KEYS[8]  waiter_dl     zset    ticket -> ms the ticket dies unless refreshed
--   KEYS[9]  tickets       hash    ticket -> holder JSON
--   KEYS[10] handoffs      hash    ticket -> grant JSON, while that lease lasts (retried acquires get it back)
--   KEYS[11] wake prefix   list prefix; the grant JSON is pushed to KEYS[11]..ticket when that ticket is granted
--   KEYS[12] events        stream
--   KEYS[13] draining      string
--   KEYS[14] leader        string  the active supervisor of the caller's Docker host
-- Time comes from the server (TIME), never from a client.
local K_META, K_CONTAINERS, K_FREE, K_LEASES, K_EXPIRIES, K_LAST = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_WAITERS, K_WAITER_DL, K_TICKETS, K_HANDOFFS, K_WAKE = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local K_EVENTS, K_DRAINING, K_LEADER = KEYS[12], KEYS[13], KEYS[14]

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

local function get_record(name)
  local raw = redis.call('HGET', K_CONTAINERS, name)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_record(rec)
  redis.call('HSET', K_CONTAINERS, rec.name, cjson.encode(rec))
end

-- The routine moves (available <-> allocated) are told by the granted/released events
-- themselves; every other change of state gets a 'state' event of its own.
local ROUTINE = {['available>allocated'] = true, ['allocated>available'] = true}

local function set_state(rec, state, reason)
  local old = rec.state
  rec.state = state
  put_record(rec)
  if old ~= state and not ROUTINE[tostring(old) .. '>' .. state] then
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
  local raw = redis.call('HGET', K_LEASES, name)
  if not raw then return false end
  local lease = cjson.decode(raw)
  redis.call('HDEL', K_LEASES, name)
  redis.call('ZREM', K_EXPIRIES, name)
  if lease.ticket ~= '' then redis.call('HDEL', K_HANDOFFS, lease.ticket) end
  emit('revoked', name, {'token', lease.token, 'test_run_id', lease.test_run_id, 'reason', reason,
                         'duration_ms', NOW - lease.granted_ms})
  return true
end

-- Grant `rec` to `holder` (a table with test_run_id, job_id, worker, ttl_ms, cap_ms, random).
local function grant(rec, holder)
  local generation = redis.call('HINCRBY', K_META, 'generation', 1)
  local token = redis.call('HGET', K_META, 'epoch') .. ':' .. generation .. ':' .. holder.random
  local cap = NOW + holder.cap_ms
  local lease = {
    token = token, test_run_id = holder.test_run_id, job_id = holder.job_id, worker = holder.worker,
    granted_ms = NOW, renewed_ms = NOW, expires_ms = math.min(NOW + holder.ttl_ms, cap), cap_ms = cap,
    ticket = holder.ticket or '',
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
  local head = redis.call('ZRANGE', K_WAITERS, 0, 0)[1]
  if head then
    local holder = cjson.decode(redis.call('HGET', K_TICKETS, head))
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

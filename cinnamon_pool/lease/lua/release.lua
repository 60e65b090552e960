-- release.lua: end the lease of the current token and record the job's outcome.
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] container name   ARGV[2] token   ARGV[3] outcome ok|test_failed|infra_error
-- ARGV[4] error threshold  ARGV[5] "recycle" when the job side saw residue or a failed cleanup
-- ARGV[6] cleanup duration ms ("" when none ran)   ARGV[7] cleanup note   ARGV[8] artifacts folder or ""
-- ARGV[9] a failed job's error ("" when none)   ARGV[10] the tool or phase that failed
-- ARGV[11] tool calls   ARGV[12] their p50 latency, ms ("" without calls)   ARGV[13] the slowest, ms
-- ARGV[14] console errors the tool calls reported   ARGV[15] the lease's Playwright trace (path) or ""
-- Returns {"OK", "available"|"handed"|"restarting"|"preparing", error_count} | {"NOOP"} (released twice)
--       | {"LOST", reason} | {"NOT_OWNER", reason}. Rejections write nothing, except that a
-- lease found expired is ended as the reaper would end it.
local name, token, outcome = ARGV[1], ARGV[2], ARGV[3]
local lease = get_lease(name)
if not lease or lease.token ~= token then
  if redis.call('HGET', K_LAST, name) == token then return {'NOOP'} end
  local epoch = redis.call('HGET', K_META, 'epoch')
  if not epoch or token_epoch(token) ~= epoch then return {'LOST', 'redis lost the pool state (epoch changed)'} end
  if not lease then return {'LOST', 'no lease on this container (expired, reclaimed or released)'} end
  return {'NOT_OWNER', 'another token holds this container'}
end
local rec = get_record(name)
if not rec then
  revoke_lease(name, 'container record unreadable')
  return {'LOST', 'the container is no longer registered'}
end
if NOW >= lease.expires_ms then
  revoke_lease(name, 'expired')
  set_state(rec, 'restarting', 'lease expired')
  return {'LOST', 'lease expired'}
end
redis.call('HDEL', K_LEASES, name)
redis.call('ZREM', K_EXPIRIES, name)
redis.call('HSET', K_LAST, name, token)
if lease.ticket ~= '' then redis.call('HDEL', K_HANDOFFS, lease.ticket) end
if (ARGV[6] or '') ~= '' then rec.last_cleanup_ms = NOW end  -- kept by the state change below
rec.last_outcome = outcome  -- the gateway keeps the lease's trace by it (artifacts policy 'failure')
if outcome == 'infra_error' then
  rec.error_count = (tonumber(rec.error_count) or 0) + 1
elseif outcome == 'ok' then
  rec.error_count = 0
end
local threshold = tonumber(ARGV[4])
emit('released', name, optional({'token', token, 'test_run_id', lease.test_run_id, 'outcome', outcome,
                                 'duration_ms', NOW - lease.granted_ms, 'error_count', rec.error_count, 'threshold', ARGV[4]},
                                'cleanup_ms', ARGV[6], 'cleanup_note', ARGV[7], 'artifacts', ARGV[8], 'error', ARGV[9],
                                'context', ARGV[10], 'tool_calls', ARGV[11], 'tool_p50_ms', ARGV[12], 'tool_max_ms', ARGV[13],
                                'console_errors', ARGV[14], 'trace', ARGV[15]))
if rec.state == 'draining' or rec.error_count >= threshold or ARGV[5] == 'recycle' then
  local reason = 'drained'  -- set_state keeps the reason it was drained for (memory, operator)
  if rec.error_count >= threshold then reason = 'error_threshold' elseif ARGV[5] == 'recycle' then reason = 'cleanup' end
  set_state(rec, 'restarting', reason)
  return {'OK', 'restarting', rec.error_count}
end
-- The gateway of the container's host prepares sessions (its key is live): the container waits
-- in 'preparing' for the next job's session (prepared.lua offers it; the supervisor offers it
-- after gateway.prepare_timeout_s, or at once when that gateway's key is gone).
if redis.call('EXISTS', K_PREPARER .. rec.host) == 1 then
  set_state(rec, 'preparing', 'released')
  return {'OK', 'preparing', rec.error_count}
end
if offer(rec, 'released') then return {'OK', 'handed', rec.error_count} end
return {'OK', 'available', rec.error_count}

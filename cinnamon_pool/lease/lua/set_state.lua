-- set_state.lua: the supervisor moves a container to draining, restarting or unhealthy.
-- draining: a leased container restarts when released; a free one goes to restarting now.
-- restarting/unhealthy: leaves the free set; a lease on it is revoked (its holder gets LOST).
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] container name   ARGV[2] state   ARGV[3] reason
-- ARGV[4] "if_free": change it only if it is in the free set now, else {"BUSY"};
--         "if_token:<token>": only while that token holds its lease (an operator's kill), else {"BUSY"}
-- ARGV[5] leader id ('' = no election); a deposed leader gets {"NOT_LEADER"}
-- Returns {"OK", state} | {"UNKNOWN"} when the container is not registered.
if not is_leader(ARGV[5]) then return {'NOT_LEADER'} end
local name, state, reason = ARGV[1], ARGV[2], ARGV[3]
local rec = get_record(name)
if not rec then return {'UNKNOWN'} end
if ARGV[4] == 'if_free' and not redis.call('ZSCORE', K_FREE, name) then return {'BUSY'} end
if string.sub(ARGV[4], 1, 9) == 'if_token:' then
  local lease = get_lease(name)
  if not lease or lease.token ~= string.sub(ARGV[4], 10) then return {'BUSY'} end
end
if state == 'draining' then
  if redis.call('HEXISTS', K_LEASES, name) == 1 then
    set_state(rec, 'draining', reason)
    return {'OK', 'draining'}
  end
  state = 'restarting'
end
redis.call('ZREM', K_FREE, name)
revoke_lease(name, reason)
set_state(rec, state, reason)
return {'OK', state}

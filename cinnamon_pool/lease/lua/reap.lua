-- reap.lua: end every lease past its expiry (TTL or hard cap); those containers go to
-- "restarting" so the supervisor recycles them before they serve again. Drops dead waiters.
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] leader id ('' = no election); a deposed leader gets {"NOT_LEADER"}
-- Returns the names of the containers whose leases expired.
if not is_leader(ARGV[1]) then return {'NOT_LEADER'} end
purge_dead_waiters()
local expired = redis.call('ZRANGEBYSCORE', K_EXPIRIES, '-inf', NOW)
for _, name in ipairs(expired) do
  redis.call('ZREM', K_EXPIRIES, name)  -- also a member no lease stands behind
  local lease = get_lease(name)
  local reason = 'expired'
  if lease and NOW >= lease.cap_ms then reason = 'hard cap' end
  revoke_lease(name, reason)
  local rec = get_record(name)
  if rec then set_state(rec, 'restarting', 'lease ' .. reason) end
end
return expired

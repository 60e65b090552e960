-- forget.lua: drop one value the decoder rejected (written by something other than the pool's
-- scripts), but only while it is still the same bytes, so a value rewritten meanwhile stays.
-- KEYS: the generated prelude.
-- ARGV[1] which hash or zset: containers|leases|free|expiries|desired
-- ARGV[2] field (hash) or member (zset)   ARGV[3] the rejected value ('' for a zset member)
-- ARGV[4] leader id ('' = no election)
-- Returns {"OK", 1 if dropped else 0} | {"NOT_LEADER"}
if not is_leader(ARGV[4]) then return {'NOT_LEADER'} end
local HASHES = {containers = K_CONTAINERS, leases = K_LEASES, desired = K_DESIRED}
local ZSETS = {free = K_FREE, expiries = K_EXPIRIES}
local which, field, value = ARGV[1], ARGV[2], ARGV[3]
if HASHES[which] then
  if redis.call('HGET', HASHES[which], field) ~= value then return {'OK', 0} end
  redis.call('HDEL', HASHES[which], field)
  if which == 'containers' then
    redis.call('ZREM', K_FREE, field)
    revoke_lease(field, 'container record unreadable')
  elseif which == 'leases' then
    redis.call('ZREM', K_EXPIRIES, field)
    local rec = get_record(field)  -- nobody can hold it now: recycle it before it serves again
    if rec then
      redis.call('ZREM', K_FREE, field)
      set_state(rec, 'restarting', 'lease unreadable')
    end
  end
elseif ZSETS[which] then
  if redis.call('ZREM', ZSETS[which], field) == 0 then return {'OK', 0} end
else
  return {'OK', 0}
end
emit('forgotten', field, {'key', which})
return {'OK', 1}

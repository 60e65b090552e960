-- deregister.lua: a container leaves the pool (vanished, replaced or scaled down).
-- A lease on it is revoked (its holder gets LOST on its next renewal).
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] container name   ARGV[2] reason
-- ARGV[3] "if_unleased" to leave a leased container alone (scale-down, drain), else ""
-- ARGV[4] leader id ('' = no election); a deposed leader gets {"NOT_LEADER"}
-- Returns {"OK", 1 if it was registered else 0} | {"BUSY"} when ARGV[3] and it is leased
if not is_leader(ARGV[4]) then return {'NOT_LEADER'} end
local name = ARGV[1]
if ARGV[3] == 'if_unleased' and redis.call('HEXISTS', K_LEASES, name) == 1 then return {'BUSY'} end
local known = redis.call('HEXISTS', K_CONTAINERS, name)
revoke_lease(name, ARGV[2])
redis.call('ZREM', K_FREE, name)
redis.call('HDEL', K_CONTAINERS, name)
redis.call('HDEL', K_LAST, name)
if known == 1 then emit('deregistered', name, {'reason', ARGV[2]}) end
return {'OK', known}

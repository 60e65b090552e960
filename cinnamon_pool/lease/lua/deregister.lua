-- deregister.lua: a container leaves the pool (vanished, replaced or scaled down).
-- A lease on it is revoked (its holder gets LOST on its next renewal).
-- KEYS: the common layout of _lib.lua.
-- ARGV[1] container name   ARGV[2] reason
-- Returns {"OK", 1 if it was registered else 0}
local name = ARGV[1]
local known = redis.call('HEXISTS', K_CONTAINERS, name)
revoke_lease(name, ARGV[2])
redis.call('ZREM', K_FREE, name)
redis.call('HDEL', K_CONTAINERS, name)
redis.call('HDEL', K_LAST, name)
if known == 1 then emit('deregistered', name, {'reason', ARGV[2]}) end
return {'OK', known}

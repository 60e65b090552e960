-- renew.lua: extend the lease of the current token by its TTL, never past the hard cap.
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] container name   ARGV[2] token   ARGV[3] ttl ms
-- Returns {"OK", expires_ms, now_ms} | {"LOST", reason} | {"NOT_OWNER", reason}
-- A rejected renewal writes nothing.
local name, token = ARGV[1], ARGV[2]
local epoch = redis.call('HGET', K_META, 'epoch')
if not epoch or token_epoch(token) ~= epoch then
  return {'LOST', 'redis lost the pool state (epoch changed)'}
end
local lease = get_lease(name)
if not lease then return {'LOST', 'no lease on this container (expired, reclaimed or released)'} end
if lease.token ~= token then return {'NOT_OWNER', 'another token holds this container'} end
if NOW >= lease.expires_ms then return {'LOST', 'lease expired'} end
if NOW >= lease.cap_ms then return {'LOST', 'hard cap reached'} end
lease.renewed_ms = NOW
lease.expires_ms = math.min(NOW + tonumber(ARGV[3]), lease.cap_ms)
redis.call('HSET', K_LEASES, name, cjson.encode(lease))
redis.call('ZADD', K_EXPIRIES, lease.expires_ms, name)
return {'OK', lease.expires_ms, NOW}

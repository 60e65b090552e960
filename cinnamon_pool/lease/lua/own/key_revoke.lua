-- key_revoke.lua: revoke an API key by its name: its record, its name and its count of open
-- sessions go together (the gateway ends its open sessions when it next looks).
-- KEYS[1] the keys hash (digest -> key record)
-- KEYS[2] the names hash (name -> digest)
-- KEYS[3] the open sessions per key name
-- ARGV[1] the name
-- Returns 1 when revoked, 0 when no key has that name
local digest = redis.call('HGET', KEYS[2], ARGV[1])
if not digest then return 0 end
redis.call('HDEL', KEYS[1], digest)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1

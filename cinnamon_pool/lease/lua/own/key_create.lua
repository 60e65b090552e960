-- key_create.lua: create an API key's name only when it is free, both hashes in one step.
-- KEYS[1] the keys hash (digest -> key record)
-- KEYS[2] the names hash (name -> digest)
-- ARGV[1] the name
-- ARGV[2] the key's digest
-- ARGV[3] the key's record (JSON)
-- Returns 1 when created, 0 when the name is taken
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1

-- compare_and_delete_field.lua: delete a hash field only while it holds the caller's own value
-- (a lease's sessions, a held session), so a newer value written meanwhile is kept.
-- KEYS[1] the hash
-- ARGV[1] the field
-- ARGV[2] the value the caller read or wrote
-- Returns 1 when deleted, 0 when it held something else (or nothing)
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0

-- compare_and_delete.lua: delete a string key only while it holds the caller's own value (a
-- size request once applied, the preparer's announcement); another's value is kept.
-- KEYS[1] the key
-- ARGV[1] the value the caller wrote
-- Returns 1 when deleted, 0 when it held something else (or nothing)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0

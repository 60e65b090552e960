-- set_size.lua: the number of slots a Docker host serves (its desired size), kept in Redis so
-- that a restarted or standby supervisor adopts it instead of a size from its own memory.
-- KEYS: the generated prelude (K_DESIRED: host -> size).
-- ARGV[1] host   ARGV[2] size (a whole number >= 0)   ARGV[3] "init": only when the host has
-- no readable size yet, "set": always, "grow": only if no host of the pool grew it within the
-- cool-down (K_GROWTH), so waiting jobs make one host start containers, not every host
-- ARGV[4] reason   ARGV[5] cool-down ms (for "grow")   ARGV[6] leader id ('' = no election)
-- Returns {"OK", size now in force, "changed"|"kept"} | {"NOT_LEADER"}
if not is_leader(ARGV[6]) then return {'NOT_LEADER'} end
local host, size, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local current = tonumber(redis.call('HGET', K_DESIRED, host) or '')
if current and (current < 0 or current ~= math.floor(current)) then current = nil end
if mode == 'init' and current then return {'OK', current, 'kept'} end
if mode == 'grow' then
  if redis.call('SET', K_GROWTH, host, 'NX', 'PX', math.max(1, tonumber(ARGV[5]))) == false then
    return {'OK', current or size, 'kept'}
  end
end
if current == size then return {'OK', size, 'kept'} end
redis.call('HSET', K_DESIRED, host, size)
emit('scaled', '', {'host', host, 'from', current or '', 'to', size, 'reason', ARGV[4]})
return {'OK', size, 'changed'}

-- host.lua: a Docker host joins the pool and gets its index k, in joining order, once and for
-- good: its containers are container-(k*1000+1) ..., so names never clash across hosts.
-- KEYS: the generated prelude (K_HOSTS: host -> index).
-- ARGV[1] host   ARGV[2] the index it had ('' = none; after Redis lost its data, a host takes its
-- old index back when no other host took it meanwhile)   ARGV[3] leader id ('' = no election)
-- Returns {"OK", index} | {"NOT_LEADER"}
if not is_leader(ARGV[3]) then return {'NOT_LEADER'} end
local index = tonumber(redis.call('HGET', K_HOSTS, ARGV[1]) or '')
if index and index >= 0 and index == math.floor(index) then return {'OK', index} end
local taken = {}
for _, value in ipairs(redis.call('HVALS', K_HOSTS)) do taken[tonumber(value) or -1] = true end
index = tonumber(ARGV[2])
if not index or taken[index] then
  index = 0
  while taken[index] do index = index + 1 end
end
redis.call('HSET', K_HOSTS, ARGV[1], index)
emit('host_joined', '', {'host', ARGV[1], 'index', index})
return {'OK', index}

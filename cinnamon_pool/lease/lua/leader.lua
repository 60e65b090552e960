-- leader.lua: one active supervisor per (pool, Docker host), through a key with a TTL.
-- KEYS: the generated prelude (K_LEADER is the leader key of the caller's host).
-- ARGV[1] "claim" | "renew" | "resign"   ARGV[2] supervisor id   ARGV[3] lease ms
-- Returns {"OK"} | {"NOT_LEADER", current holder or ""}
local op, id, current = ARGV[1], ARGV[2], redis.call('GET', K_LEADER)
if op == 'claim' and not current then
  redis.call('SET', K_LEADER, id, 'PX', ARGV[3])
  emit('leader', '', {'id', id})
  return {'OK'}
end
if current ~= id then return {'NOT_LEADER', current or ''} end
if op == 'resign' then
  redis.call('DEL', K_LEADER)
else
  redis.call('PEXPIRE', K_LEADER, ARGV[3])
end
return {'OK'}

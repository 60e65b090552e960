-- register.lua: a ready container joins the pool (new, or recycled under the same name).
-- Creates the pool metadata with the given epoch when it is missing. A lease still held on
-- the name is revoked (its holder gets LOST), then the container is offered to waiters.
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] record JSON {name, container_id, slot, host, endpoint, restarts, started_at}
-- ARGV[2] epoch candidate (16 hex), used only when the pool has none
-- ARGV[3] leader id ('' = no election); a deposed leader gets {"NOT_LEADER"}
-- Returns {"OK", epoch, handed ticket or ""}
if not is_leader(ARGV[3]) then return {'NOT_LEADER'} end
redis.call('HSETNX', K_META, 'epoch', ARGV[2])
local rec = cjson.decode(ARGV[1])
local old = get_record(rec.name)
revoke_lease(rec.name, 'container re-registered')
rec.error_count = 0
rec.state = (old and old.state) or 'starting'
emit('registered', rec.name, {'container_id', rec.container_id, 'endpoint', rec.endpoint, 'host', rec.host})
local handed = offer(rec, 'registered')
return {'OK', redis.call('HGET', K_META, 'epoch'), handed or ''}

-- cancel.lua: a waiter gives up. Drops its ticket; a grant handed to it meanwhile is released
-- back (offered to the next waiter or the free set), so nothing is stranded.
-- KEYS: the common layout of _lib.lua.
-- ARGV[1] ticket
-- Returns {"OK", "cancelled" | "returned"}
local ticket = ARGV[1]
if redis.call('ZSCORE', K_WAITERS, ticket) then emit('waiter_gone', '', {'ticket', ticket, 'reason', 'cancelled'}) end
drop_ticket(ticket)
local handed = redis.call('HGET', K_HANDOFFS, ticket)
if not handed then return {'OK', 'cancelled'} end
redis.call('HDEL', K_HANDOFFS, ticket)
local grant = cjson.decode(handed)
local raw = redis.call('HGET', K_LEASES, grant.name)
if raw and cjson.decode(raw).token == grant.token then
  revoke_lease(grant.name, 'waiter gave up')
  redis.call('HSET', K_LAST, grant.name, grant.token)
  offer(get_record(grant.name), 'returned by a waiter that gave up')
end
return {'OK', 'returned'}

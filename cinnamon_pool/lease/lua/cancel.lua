-- cancel.lua: a waiter gives up. Drops its ticket; a grant handed to it meanwhile is released
-- back (offered to the next waiter or the free set), so nothing is stranded.
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] ticket
-- Returns {"OK", "cancelled" | "returned"}
local ticket = ARGV[1]
if redis.call('ZSCORE', K_WAITERS, ticket) then emit('waiter_gone', '', {'ticket', ticket, 'reason', 'cancelled'}) end
drop_ticket(ticket)
local handed = redis.call('HGET', K_HANDOFFS, ticket)
if not handed then return {'OK', 'cancelled'} end
redis.call('HDEL', K_HANDOFFS, ticket)
local grant = decode(handed, is_grant)
local lease = grant and get_lease(grant.name)
if lease and lease.token == grant.token then
  revoke_lease(grant.name, 'waiter gave up')
  redis.call('HSET', K_LAST, grant.name, grant.token)
  local rec = get_record(grant.name)
  if rec then offer(rec, 'returned by a waiter that gave up') end
end
return {'OK', 'returned'}

-- acquire.lua: grant a free container to this ticket, or queue the ticket (FIFO).
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] ticket (32 hex)        ARGV[2] holder JSON {test_run_id, job_id, worker, ttl_ms, cap_ms, random}
-- ARGV[3] waiter ttl ms          ARGV[4] "wait" to queue when nothing is free, "try" to not queue
-- Returns {"GRANTED", grant JSON} | {"WAIT", position, counts JSON} | {"EXHAUSTED", counts JSON}
--       | {"NOT_READY"} when the pool has no metadata (no supervisor registered a container yet).
-- Only the head of the queue (or anyone when the queue is empty) may take a free container,
-- and a ticket already granted a container (here or by a release) gets that grant back: a
-- retried acquire whose reply was lost is idempotent.
local ticket, mode = ARGV[1], ARGV[4]
local handed = redis.call('HGET', K_HANDOFFS, ticket)
if handed then
  return {'GRANTED', handed}  -- the entry goes when the lease ends (release, expiry, revoke)
end
local epoch = redis.call('HGET', K_META, 'epoch')
if not epoch then
  return {'NOT_READY'}
end
local rank = false
if redis.call('ZCARD', K_WAITERS) > 0 then  -- waiters' bookkeeping only when there are some
  purge_dead_waiters()
  rank = redis.call('ZRANK', K_WAITERS, ticket)
end
if (rank == false or rank == 0) and redis.call('EXISTS', K_DRAINING) == 0 then
  local name, rec
  repeat  -- taken from the free set; a name without a readable record is dropped with it
    name = redis.call('ZRANGE', K_FREE, 0, 0)[1]  -- (not ZPOPMIN: the documented ACLs allow ZRANGE and ZREM)
    if name then redis.call('ZREM', K_FREE, name) end
    rec = name and get_record(name)
  until rec or not name
  if rec then
    local holder = cjson.decode(ARGV[2])
    if rank ~= false then
      holder = decode(redis.call('HGET', K_TICKETS, ticket), is_holder) or holder  -- keeps when it queued
      drop_ticket(ticket)
      holder.queued_ticket = ticket
    end
    -- Kept under the ticket until the lease ends, so a retry of this acquire whose reply was
    -- lost gets this same grant instead of a second container.
    holder.ticket = ticket
    local granted = grant(rec, holder, epoch)
    redis.call('HSET', K_HANDOFFS, ticket, granted)
    return {'GRANTED', granted}
  end
end
if mode ~= 'wait' then
  return {'EXHAUSTED', cjson.encode(counts())}
end
if rank == false then
  local seq = redis.call('HINCRBY', K_META, 'ticket_seq', '1')
  redis.call('ZADD', K_WAITERS, seq, ticket)
  local holder = cjson.decode(ARGV[2])
  holder.ticket = ticket
  holder.queued_ms = NOW
  redis.call('HSET', K_TICKETS, ticket, cjson.encode(holder))
  emit('waiting', '', {'ticket', ticket, 'test_run_id', holder.test_run_id})
  rank = redis.call('ZRANK', K_WAITERS, ticket)
end
redis.call('ZADD', K_WAITER_DL, NOW + tonumber(ARGV[3]), ticket)
return {'WAIT', rank + 1, cjson.encode(counts())}

-- prepared.lua: a released container's next session is ready (or could not be made): offer it.
-- Called by the gateway of the container's host, or by the supervisor when the gateway takes
-- longer than rules.prepare_timeout_s (then the next job pays the cold path).
-- KEYS: the generated prelude (see keys.py SCRIPT_KEYS).
-- ARGV[1] container name   ARGV[2] the token of the lease whose release it follows ('' = any)
-- ARGV[3] result ok|failed|timeout|residue   ARGV[4] detail   ARGV[5] how long preparing took, ms
-- Returns {"OK", "available"|"handed"|"restarting"} | {"NOOP"} when the container is not waiting
-- for this preparation (another release since, restarted, gone).
local name, token, result = ARGV[1], ARGV[2], ARGV[3]
local rec = get_record(name)
if not rec or rec.state ~= 'preparing' then return {'NOOP'} end
if token ~= '' and redis.call('HGET', K_LAST, name) ~= token then return {'NOOP'} end
emit('prepared', name, {'result', result, 'detail', ARGV[4], 'prepare_ms', ARGV[5]})
if result == 'residue' then
  set_state(rec, 'restarting', 'residue: ' .. ARGV[4])
  return {'OK', 'restarting'}
end
if offer(rec, 'prepared') then return {'OK', 'handed'} end
return {'OK', 'available'}

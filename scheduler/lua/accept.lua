-- accept: the agent took the task (assigned -> running; run deadline starts).
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id
-- ARGV[11] the attempt's submit entry in the agent's inbox, or '': acked and deleted whatever the outcome
-- Returns {outcome, seq or '', status}. A repeat from the same attempt and agent is 'duplicate'.
-- Invariant: only the current attempt's assigned agent changes the task (fencing).
local id, attempt, agent = ARGV[8], ARGV[9], ARGV[10]
if (ARGV[11] or '') ~= '' then
  redis.call('XACK', k_inbox(agent), 'deliver', ARGV[11])
  redis.call('XDEL', k_inbox(agent), ARGV[11])
end
local refused, f = fence(id, attempt, agent)
if refused == 'terminal' and string.sub(f[4] or '', 1, #attempt + #agent + 2) == attempt .. ':' .. agent .. ':' then
  return { 'duplicate', '', f[1] }
end
if refused then return { refused, '', f[1] or '' } end
if f[1] == 'running' then return { 'duplicate', '', 'running' } end
implied_accept(id, f, attempt, agent, true)
return { 'ok', f[8], 'running' }

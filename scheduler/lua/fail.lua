-- fail: the agent reported an error; retry after backoff while attempts remain, else failed.
-- KEYS[8] task hash
-- ARGV[8] task id  [9] attempt  [10] agent id  [11] error code  [12] message (kept, not emitted)
-- ARGV[13] retryable '1'|'0'  [14] agent's retry delay ms or ''  [15] backoff base ms
-- ARGV[16] backoff cap ms  [17] jitter fraction in [0, 1)
-- ARGV[18] the attempt's submit entry in the agent's inbox, or '': acked and deleted whatever the outcome
-- Returns {outcome, seq or '', status}. A repeat of the finishing frame is 'duplicate'.
-- A task still `assigned` records `running` first (the accept the error implies).
-- Invariant: the slot is freed exactly once; counted attempts (lost ones given back) never exceed max attempts.
local id, attempt, agent, code = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
if (ARGV[18] or '') ~= '' then
  redis.call('XACK', k_inbox(agent), 'deliver', ARGV[18])
  redis.call('XDEL', k_inbox(agent), ARGV[18])
end
local refused, f = fence(id, attempt, agent)
if f[4] == attempt .. ':' .. agent .. ':fail' then return { 'duplicate', '', f[1] } end
if refused then return { refused, '', f[1] or '' } end
release_slot(agent, id)
if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, true) end
redis.call('HSET', KEYS[8], 'fin', attempt .. ':' .. agent .. ':fail', 'error', code, 'message', ARGV[12])
local n = tonumber(attempt)
if ARGV[13] == '1' and counted(n, redis.call('HGET', KEYS[8], 'losses')) < tonumber(f[7]) then
  backoff(id, n, code, tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[14]))
  wake()
  return { 'ok', redis.call('HGET', KEYS[8], 'seq'), 'scheduled' }
end
local seq = finish(id, 'failed', attempt, agent, code)
flush_counts()
wake()
return { 'ok', seq, 'failed' }

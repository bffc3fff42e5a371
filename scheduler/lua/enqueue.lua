-- enqueue: store a new task and put it in its queue (or in `delayed` when runAt is ahead).
-- KEYS[8] task hash  KEYS[9] ord counter
-- ARGV[8] task id  [9] owner  [10] type  [11] input JSON  [12] priority  [13] pinned agent or ''
-- ARGV[14] capabilities JSON array  [15] route id  [16] timeout s  [17] max attempts
-- ARGV[18] run_at ms or ''  [19] attempt  [20] seq  [21] status hint ('scheduled' keeps a rebuilt
--   retry waiting until run_at)
-- Returns 1 when stored, 0 when the task id is already known (idempotent).
-- Invariant: a task is in exactly one of: its queue, `delayed`, an agent's slot set, or terminal.
-- A fresh task (seq 0) records its first status as event seq 1; a rebuilt one keeps its seq.
local id, route = ARGV[8], ARGV[15]
if redis.call('EXISTS', KEYS[8]) == 1 then return 0 end
local ord = redis.call('INCR', KEYS[9])
local run_at = tonumber(ARGV[18])
local due_later = run_at ~= nil and run_at > NOW
local status = due_later and 'scheduled' or 'queued'
local attempt = tonumber(ARGV[19])
redis.call('HSET', KEYS[8], 'owner', ARGV[9], 'type', ARGV[10], 'input', ARGV[11], 'prio', ARGV[12],
  'pin', ARGV[13], 'caps', ARGV[14], 'route', route, 'ord', int(ord), 'timeout', ARGV[16],
  'maxatt', ARGV[17], 'status', status, 'attempt', int(attempt), 'seq', ARGV[20], 'agent', '', 'fin', '',
  'runat', ARGV[18])
if due_later then
  redis.call('ZADD', K_DELAYED, int(run_at), id)
else
  queue_push(id, route, queue_score(ARGV[12], ord), ARGV[13], ARGV[14])
  wake()
end
if tonumber(ARGV[20]) == 0 then
  emit(id, ARGV[9], 'task/status', status, attempt, '', '', '')
end
return 1

-- cancel: take a task out of wherever it waits; a task on an agent gets a cancel inbox entry.
-- KEYS[8] task hash   ARGV[8] task id  [9] reason
-- Returns {outcome 'canceled' | 'not_found' | 'terminal', seq, agent id, attempt}.
-- Invariant: after it, the task is in no queue, timer or slot set, and a later enqueue of it is a no-op.
local id = ARGV[8]
local f = redis.call('HMGET', KEYS[8], 'status', 'attempt', 'agent', 'route', 'seq')
if not f[1] then
  -- Unknown here (its enqueue is still on the way, or was lost): a terminal hash makes a late enqueue of this
  -- id skip it (enqueue.lua stores only unknown ids), so the cancel the caller records cannot be undone.
  redis.call('HSET', KEYS[8], 'status', 'canceled')
  redis.call('EXPIRE', KEYS[8], TASK_TTL)
  return { 'not_found', '', '', '' }
end
if TERMINAL[f[1]] then return { 'terminal', f[5], f[3], f[2] } end
local attempt, agent = tonumber(f[2]), f[3]
if f[1] == 'queued' then
  redis.call('ZREM', k_queue(f[4]), id)
  queue_refresh(f[4])
elseif f[1] == 'assigned' or f[1] == 'running' then
  release_slot(agent, id)
  inbox_push(agent, 'cancel', id, attempt, cancel_payload(id, attempt, ARGV[9]))
  wake()
end
local seq = finish(id, 'canceled', attempt, agent, ARGV[9])
flush_counts()
return { 'canceled', seq, agent, int(attempt) }

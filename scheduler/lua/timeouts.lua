-- timeouts: assign-ack and run deadlines that passed. The agent's slot is freed and it gets a
-- cancel entry; then the task is retried (assign timeout: queued at once; run timeout: backoff)
-- or, on its last attempt, failed with 'timeout'.
-- ARGV[8] max tasks this call  [9] backoff base ms  [10] backoff cap ms  [11] jitter seed in [0, 1)
-- Returns the number of tasks taken back.
-- Invariant: a task is in `deadlines` exactly while it is assigned or running.
local limit, base_ms, cap_ms, r = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', int(NOW), 'LIMIT', 0, limit)) do
  local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent', 'maxatt')
  if t[1] == 'assigned' or t[1] == 'running' then
    local attempt, agent = tonumber(t[2]), t[3]
    release_slot(agent, id)
    inbox_push(agent, 'cancel', id, attempt, cancel_payload(id, attempt, 'timeout'))
    if attempt >= tonumber(t[4]) then
      finish(id, 'failed', attempt, agent, 'timeout')
    elseif t[1] == 'assigned' then
      requeue(id, attempt, 'assign_timeout')
    else
      -- Golden-ratio steps give each task of the batch its own jitter from one seed.
      backoff(id, attempt, 'timeout', base_ms, cap_ms, (r + n * 0.6180339887) % 1, 0)
    end
    n = n + 1
  else
    redis.call('ZREM', K_DEADLINES, id)
  end
end
if n > 0 then wake() end
return n

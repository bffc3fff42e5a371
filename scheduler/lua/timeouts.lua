-- timeouts: assign-ack and run deadlines that passed. The agent's slot is freed and it gets a
-- cancel entry. An assign timeout (the agent never answered the submit) is a loss (see `lose`):
-- queued at once, not counted against the attempts. A run timeout is the task's own: retried after
-- backoff or, once its counted attempts reach max attempts, failed with 'timeout'. Either way the
-- task remembers the agent (`avoid`) so dispatch prefers another one.
-- ARGV[8] max tasks this call  [9] backoff base ms  [10] backoff cap ms  [11] jitter seed in [0, 1)
-- ARGV[12] max losses per task
-- Returns the number of tasks taken back.
-- Invariant: a task is in `deadlines` exactly while it is assigned or running.
local limit, base_ms, cap_ms, r = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local max_losses = tonumber(ARGV[12])
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', int(NOW), 'LIMIT', 0, limit)) do
  local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent', 'maxatt', 'losses')
  if t[1] == 'assigned' or t[1] == 'running' then
    local attempt, agent = tonumber(t[2]), t[3]
    release_slot(agent, id)
    inbox_push(agent, 'cancel', id, attempt, cancel_payload(id, attempt, 'timeout'))
    redis.call('HSET', k_task(id), 'avoid', agent)
    if t[1] == 'assigned' then
      lose(id, attempt, agent, 'assign_timeout', max_losses)
    elseif counted(attempt, t[5]) >= tonumber(t[4]) then
      finish(id, 'failed', attempt, agent, 'timeout')
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
flush_counts()
return n

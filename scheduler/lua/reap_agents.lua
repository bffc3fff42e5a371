-- reap_agents: agents whose lease (or reconnect grace) ran out lose their tasks; a loss is counted in
-- `losses`, not against the task's attempts (see `lose`).
-- (no script keys: the expired agents are read from the agents zset)
-- ARGV[8] max agents this call  [9] max losses per task
-- Returns {agents reaped, tasks requeued, tasks failed ('worker_lost')}.
-- Invariant: a task is never left assigned to an agent that is no longer in the agents zset.
local limit, max_losses = tonumber(ARGV[8]), tonumber(ARGV[9])
local reaped, requeued, failed = 0, 0, 0
for _, agent in ipairs(redis.call('ZRANGEBYSCORE', K_AGENTS, '-inf', '(' .. int(NOW), 'LIMIT', 0, limit)) do
  for _, id in ipairs(redis.call('SMEMBERS', k_agent_tasks(agent))) do
    local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent')
    if (t[1] == 'assigned' or t[1] == 'running') and t[3] == agent then
      local attempt = tonumber(t[2])
      -- The agent may come back still running it: tell it to stop (fenced anyway).
      inbox_push(agent, 'cancel', id, attempt, cancel_payload(id, attempt, 'worker_lost'))
      if lose(id, attempt, '', 'worker_lost', max_losses) then
        failed = failed + 1
      else
        requeued = requeued + 1
      end
    end
  end
  redis.call('DEL', k_agent(agent), k_agent_tasks(agent))
  redis.call('ZREM', K_AGENTS, agent)
  reaped = reaped + 1
end
if requeued > 0 then wake() end
flush_counts()
return { reaped, requeued, failed }

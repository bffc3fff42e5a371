-- reconcile_agent: the first heartbeat of an agent's new session lists the attempts it runs (with outcomes
-- it has not had acknowledged). A `running` attempt the scheduler gives it but the list lacks was lost with
-- an earlier process of the agent (kill -9 and restart under the same id): it is requeued at once as a
-- loss (see `lose`) instead of waiting for its run timeout with the slot held. `assigned` attempts stay
-- (their submit is redelivered from the inbox). Slot-set members the agent no longer holds are freed.
-- KEYS[8] agent hash  KEYS[9] agent slot set
-- ARGV[8] agent id  [9] max losses per task  [10..] the listed attempts as 'task id' 'attempt' pairs
-- Returns {requeued, failed ('worker_lost'), slots freed}.
-- Invariant: afterwards the slot set holds exactly the agent's assigned attempts and the listed running ones.
local agent, max_losses = ARGV[8], tonumber(ARGV[9])
local listed = {}
for i = 10, #ARGV - 1, 2 do listed[ARGV[i] .. ':' .. ARGV[i + 1]] = true end
local requeued, failed, freed = 0, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent')
  if t[3] ~= agent or not (t[1] == 'assigned' or t[1] == 'running') then
    release_slot(agent, id)
    freed = freed + 1
  elseif t[1] == 'running' and not listed[id .. ':' .. t[2]] then
    release_slot(agent, id)
    if lose(id, tonumber(t[2]), '', 'agent_restarted', max_losses) then
      failed = failed + 1
    else
      requeued = requeued + 1
    end
  end
end
if requeued + freed > 0 then wake() end
flush_counts()
return { requeued, failed, freed }

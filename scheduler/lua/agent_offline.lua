-- agent_offline: an agent is gone for good (deleted, token rotated) or stops taking work.
-- KEYS[8] agent hash  KEYS[9] agent slot set  KEYS[10] agent inbox
-- ARGV[8] agent id  [9] requeue now '1' (tasks back to queued at once, presence removed) |
--   '0' (only stop offering it work; the lease runs out and the reaper decides)
-- Returns the number of tasks put back into their queues.
-- Invariant: a requeued task holds no slot and no deadline; its attempt stays (the next dispatch bumps it).
local agent = ARGV[8]
if ARGV[9] ~= '1' then
  if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('HSET', KEYS[8], 'accepting', '0') end
  return 0
end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent')
  if (t[1] == 'assigned' or t[1] == 'running') and t[3] == agent then
    requeue(id, tonumber(t[2]), 'agent_offline')
    n = n + 1
  end
end
redis.call('DEL', KEYS[8], KEYS[9], KEYS[10])
redis.call('ZREM', K_AGENTS, agent)
if n > 0 then wake() end
return n

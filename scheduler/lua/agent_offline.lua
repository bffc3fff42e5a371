-- agent_offline: an agent is gone for good (deleted, token rotated), stops taking work, or closed its socket.
-- KEYS[8] agent hash  KEYS[9] agent slot set  KEYS[10] agent inbox
-- ARGV[8] agent id  [9] mode: '1' requeue now (tasks back to queued at once, presence removed) |
--   '0' only stop offering it work (the lease runs out and the reaper decides) |
--   'grace' the socket of session ARGV[12] closed: stop offering work and cut the lease to now + ARGV[11] ms
--   (never lengthened), unless a newer session registered meanwhile; a reconnect within it keeps the tasks,
--   else the reaper takes them back.
-- ARGV[10] max losses per task (a requeue counts as a loss, see `lose`)
-- Returns the number of tasks put back into their queues.
-- Invariant: a requeued task holds no slot and no deadline; its attempt stays (the next dispatch bumps it).
local agent = ARGV[8]
if ARGV[9] == 'grace' then
  if redis.call('HGET', KEYS[8], 'sess') ~= ARGV[12] then return 0 end
  redis.call('HSET', KEYS[8], 'accepting', '0')
  redis.call('ZADD', K_AGENTS, 'XX', 'LT', int(NOW + tonumber(ARGV[11])), agent)
  return 0
end
if ARGV[9] ~= '1' then
  if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('HSET', KEYS[8], 'accepting', '0') end
  return 0
end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  local t = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent')
  if (t[1] == 'assigned' or t[1] == 'running') and t[3] == agent then
    if not lose(id, tonumber(t[2]), '', 'agent_offline', tonumber(ARGV[10])) then n = n + 1 end
  end
end
redis.call('DEL', KEYS[8], KEYS[9], KEYS[10])
redis.call('ZREM', K_AGENTS, agent)
if n > 0 then wake() end
flush_counts()
return n

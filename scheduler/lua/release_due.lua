-- release_due: scheduled tasks whose time came (runAt, retry backoff) go to their queues.
-- ARGV[8] max tasks this call
-- Returns the number of tasks released.
-- Invariant: a task is in `delayed` exactly while it is scheduled.
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', int(NOW), 'LIMIT', 0, tonumber(ARGV[8]))) do
  redis.call('ZREM', K_DELAYED, id)
  local tkey = k_task(id)
  local f = redis.call('HMGET', tkey, 'status', 'attempt', 'prio', 'ord', 'route', 'pin', 'caps', 'owner')
  if f[1] == 'scheduled' then
    redis.call('HSET', tkey, 'status', 'queued')
    queue_push(id, f[5], queue_score(f[3], f[4]), f[6], f[7])
    emit(id, f[8], 'task/status', 'queued', tonumber(f[2]), '', '', '')
    n = n + 1
  end
end
if n > 0 then wake() end
return n

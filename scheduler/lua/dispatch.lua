-- dispatch: hand the head(s) of one queue to the least-loaded eligible candidate agents.
-- KEYS[8] the route's queue zset
-- ARGV[8] route id  [9] max tasks this call  [10] assign-ack timeout ms
-- ARGV[11] stop score or '' (yield once the head sorts after another queue's head)
-- ARGV[12..] candidate agent ids (the caller's guess; each is re-checked here: online lease,
--   accepting, pin or capabilities, free slot)
-- Returns {dispatched count, why it stopped: 'empty' | 'full' | 'yield' | 'batch'}.
-- Invariant: a task leaves the queue only together with taking a slot, bumping attempt (the
-- fencing token) and writing the submit entry into that agent's inbox.
local route, qkey = ARGV[8], KEYS[8]
local max_n, ack_ms, stop = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local pin, need = '', {}
local rj = redis.call('HGET', K_ROUTES, route)
if rj then
  local r = cjson.decode(rj)
  pin = r.pin
  need = r.caps
end

local function has_caps(caps_json)
  if #need == 0 then return true end
  local have = {}
  for _, c in ipairs(cjson.decode(caps_json or '[]')) do have[c] = true end
  for _, c in ipairs(need) do
    if not have[c] then return false end
  end
  return true
end

local cands = {}
for i = 12, #ARGV do
  local a = ARGV[i]
  local lease = redis.call('ZSCORE', K_AGENTS, a)
  if lease and tonumber(lease) > NOW and (pin == '' or pin == a) then
    local f = redis.call('HMGET', k_agent(a), 'accepting', 'conc', 'running', 'caps')
    if f[1] == '1' and (pin ~= '' or has_caps(f[4])) then
      cands[#cands + 1] = { id = a, conc = tonumber(f[2]) or 0, running = tonumber(f[3]) or 0 }
    end
  end
end

-- Paused task types (an operator hold) stay queued in place; up to MAX_SKIP of them are passed over
-- per call to reach the tasks behind them.
local K_PAUSED = P .. ':ops:paused_types'
local any_paused, skip, MAX_SKIP = redis.call('SCARD', K_PAUSED) > 0, 0, 200
local function paused(id)
  return redis.call('SISMEMBER', K_PAUSED, redis.call('HGET', k_task(id), 'type') or '') == 1
end
local n, why = 0, 'batch'
while n < max_n do
  local head = redis.call('ZRANGE', qkey, skip, skip, 'WITHSCORES')
  while any_paused and #head > 0 and paused(head[1]) do
    skip = skip + 1
    head = skip < MAX_SKIP and redis.call('ZRANGE', qkey, skip, skip, 'WITHSCORES') or {}
  end
  if #head == 0 then why = 'empty'; break end
  if stop and tonumber(head[2]) > stop then why = 'yield'; break end
  local id = head[1]
  local tkey = k_task(id)
  local t = redis.call('HMGET', tkey, 'status', 'owner', 'type', 'input', 'prio', 'timeout', 'avoid')
  -- The agent it last timed out on (`avoid`) gets it only when no other candidate has room.
  local best, fallback = nil, nil
  for _, c in ipairs(cands) do
    if c.running < c.conc then
      if c.id == t[7] then fallback = c
      elseif best == nil or c.running < best.running then best = c end
    end
  end
  best = best or fallback
  if best == nil then why = 'full'; break end
  redis.call('ZREM', qkey, id)
  -- Anything but `queued` is a leftover member; dropping it keeps the queue moving.
  if t[1] == 'queued' then
    local attempt = redis.call('HINCRBY', tkey, 'attempt', 1)
    redis.call('HSET', tkey, 'status', 'assigned', 'agent', best.id, 'slen', 0)
    take_slot(best.id, id)
    best.running = best.running + 1
    redis.call('ZADD', K_DEADLINES, int(NOW + ack_ms), id)
    inbox_push(best.id, 'submit', id, attempt, '{"taskId":' .. enc(id) .. ',"attempt":' .. int(attempt)
      .. ',"type":' .. enc(t[3]) .. ',"input":' .. t[4] .. ',"priority":' .. t[5]
      .. ',"timeoutSeconds":' .. t[6] .. '}')
    emit(id, t[2], 'task/status', 'assigned', attempt, best.id, '', '')
    n = n + 1
  end
end
queue_refresh(route)
return { n, why }

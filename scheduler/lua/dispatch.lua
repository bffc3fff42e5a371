-- dispatch: hand the head(s) of one queue to the least-loaded eligible candidate agents.
-- KEYS[8] the route's queue zset
-- ARGV[8] route id  [9] max tasks this call  [10] assign-ack timeout ms
-- ARGV[11] stop score or '' (yield once the head sorts after another queue's head)
-- ARGV[12] the route's info JSON `{"pin":..,"caps":[..]}` (fixed by the route id, so the caller may cache it)
-- Head mode (the dispatch loop sends this call right behind its wait for a wake, in the same round trip, so it
-- cannot know the queue yet): ARGV[8] '', KEYS[8] unused, ARGV[11] the presence version the candidates come from,
-- ARGV[12] unused; ARGV[2] '' takes the time from the server (a real clock moved while the wake was awaited).
-- The queue is the registry's first; its route info comes from the routes hash; the next queue's head is the
-- stop score. Returns {0, 'stale'} without a change when presence moved on or an operator hold exists (a
-- drained agent, a paused route or task type; the caller then makes an ordinary pass), and 'more' in place of 'empty'/'full' while other queues are registered.
-- ARGV[13..] candidate agent ids, least loaded first (the caller's guess; each is re-checked here: online
--   lease, accepting, pin or capabilities, free slot; only as many as it takes to seat the heads read)
-- Returns {dispatched count, why it stopped: 'empty' | 'full' | 'yield' | 'batch' (more may follow),
--   then per agent that got tasks: its id and how many} (the caller keeps its load guess with it).
-- Invariant: a task leaves the queue only together with taking a slot, bumping attempt (the
-- fencing token) and writing the submit entry into that agent's inbox.
-- Cost: the heads are read and removed, the slot sets, deadlines and the queue registry written once per
-- call; per candidate checked ZSCORE, HMGET, SCARD; per task one HMGET, one HSET, the inbox entry and the
-- event (one SISMEMBER more while some task type is paused).
local route, qkey, info = ARGV[8], KEYS[8], ARGV[12]
local max_n, ack_ms, stop = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local others, head = false, false
if route == '' then
  if NOW == nil then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  -- Any operator hold, paused task types included, leaves the call to the ordinary pass: so here no task type
  -- is paused, and the per-call check of that set below is skipped (one command less per lone task).
  if (redis.call('GET', P .. ':presence') or '') ~= ARGV[11]
    or redis.call('EXISTS', P .. ':ops:drained', P .. ':ops:paused_routes', P .. ':ops:paused_types') > 0 then
    return { 0, 'stale' }
  end
  head = true
  local reg = redis.call('ZRANGE', K_QUEUES, 0, 1, 'WITHSCORES')
  if #reg == 0 then return { 0, 'empty' } end
  route, qkey, others = reg[1], k_queue(reg[1]), #reg > 2
  stop = others and tonumber(reg[4]) or nil
  info = redis.call('HGET', K_ROUTES, route)
  if not info then return { 0, 'stale' } end
end
local r = cjson.decode(info)
-- Every reply goes through here: in head mode an emptied or filled queue ends the pass only if it was the only one.
local function reply(n, why, ...)
  if others and (why == 'empty' or why == 'full') then why = 'more' end
  return { n, why, ... }
end
local pin, need = r.pin or '', r.caps or {}

local function has_caps(caps_json)
  if #need == 0 then return true end
  local have = {}
  for _, c in ipairs(cjson.decode(caps_json or '[]')) do have[c] = true end
  for _, c in ipairs(need) do
    if not have[c] then return false end
  end
  return true
end

-- Candidates are checked in the caller's order until their free slots can seat the whole queue (or a full
-- call): a lone task checks one agent, not every candidate.
local queued = redis.call('ZCARD', qkey)
local seat = math.min(max_n, queued)
if seat == 0 then return reply(0, 'empty') end
local cands, free, checked_all = {}, 0, true
for i = 13, #ARGV do
  if free >= seat then checked_all = false; break end
  local a = ARGV[i]
  local lease = redis.call('ZSCORE', K_AGENTS, a)
  if lease and tonumber(lease) > NOW and (pin == '' or pin == a) then
    local f = redis.call('HMGET', k_agent(a), 'accepting', 'conc', 'caps')
    if f[1] == '1' and (pin ~= '' or has_caps(f[3])) then
      local c = { id = a, conc = tonumber(f[2]) or 0, running = redis.call('SCARD', k_agent_tasks(a)), new = {} }
      if c.running < c.conc then free = free + c.conc - c.running end
      cands[#cands + 1] = c
    end
  end
end

local want = math.min(max_n, free)
-- 'full' tells the caller that every candidate it passed is full (it skips them for other queues).
if want <= 0 then return reply(0, checked_all and 'full' or 'batch') end
-- Paused task types (an operator hold) stay queued in place; up to MAX_SKIP of them are passed over
-- per call to reach the tasks behind them.
local K_PAUSED, MAX_SKIP = P .. ':ops:paused_types', 200
local any_paused = not head and redis.call('SCARD', K_PAUSED) > 0
local limit = want + (any_paused and MAX_SKIP or 0)
local heads = redis.call('ZRANGE', qkey, 0, limit - 1, 'WITHSCORES')
if #heads == 0 then return reply(0, 'empty') end
local taken, fields, why, filled = {}, {}, nil, false
for i = 1, #heads, 2 do
  if #taken >= want then filled = true; break end
  if stop and tonumber(heads[i + 1]) > stop then why = 'yield'; break end
  local t = redis.call('HMGET', k_task(heads[i]), 'status', 'owner', 'type', 'input', 'prio', 'timeout', 'attempt',
    'seq', 'avoid', 'qat')
  if not (any_paused and t[1] == 'queued' and redis.call('SISMEMBER', K_PAUSED, t[3] or '') == 1) then
    taken[#taken + 1] = heads[i]
    fields[#taken] = t
  end
end
if #taken == 0 then return reply(0, why or 'empty') end
redis.call('ZREM', qkey, unpack(taken))

local n, deadlines = 0, {}
for i, id in ipairs(taken) do
  local tkey = k_task(id)
  local t = fields[i]
  -- Anything but `queued` is a leftover member; dropping it keeps the queue moving.
  if t[1] == 'queued' then
    -- The agent it last timed out on (`avoid`) gets it only when no other candidate has room. There is
    -- always a candidate with room: no more tasks were taken than free slots.
    local best, fallback = nil, nil
    for _, c in ipairs(cands) do
      if c.running < c.conc then
        if c.id == t[9] then fallback = c
        elseif best == nil or c.running < best.running then best = c end
      end
    end
    best = best or fallback
    local attempt, seq = (tonumber(t[7]) or 0) + 1, (tonumber(t[8]) or 0) + 1
    local h = {}
    -- The stream entry carries when the task became queued (`qat`, set by enqueue for a fresh task), as the
    -- `queued` entry that would tell the recorder is not in the stream; cleared, so a requeue is not misread.
    emit_at(id, t[2], seq, 'task/status', 'assigned', attempt, best.id, '', '', h, false,
      (t[10] and t[10] ~= '') and { 'queued_ms', t[10] } or nil)
    -- `ea`: this attempt's `assigned` event again, so complete.lua hands it to the result writer (one row
    -- update per task) without reading a field it only learns the name of from `seq`.
    redis.call('HSET', tkey, 'status', 'assigned', 'agent', best.id, 'slen', 0, 'attempt', int(attempt),
      'seq', int(seq), 'ea', h[2], 'qat', '', unpack(h))
    best.running = best.running + 1
    best.new[#best.new + 1] = id
    deadlines[#deadlines + 1] = int(NOW + ack_ms)
    deadlines[#deadlines + 1] = id
    redis.call('XADD', k_inbox(best.id), 'MAXLEN', '~', INBOX_MAX, '*', 'kind', 'submit', 'task_id', id,
      'attempt', int(attempt), 'payload', '{"taskId":' .. enc(id) .. ',"attempt":' .. int(attempt)
      .. ',"type":' .. enc(t[3]) .. ',"input":' .. t[4] .. ',"priority":' .. t[5]
      .. ',"timeoutSeconds":' .. t[6] .. '}')
    n = n + 1
  end
end
local placed = {}
for _, c in ipairs(cands) do
  if #c.new > 0 then
    redis.call('SADD', k_agent_tasks(c.id), unpack(c.new))
    placed[#placed + 1] = c.id
    placed[#placed + 1] = #c.new
  end
end
if n > 0 then redis.call('ZADD', K_DEADLINES, unpack(deadlines)) end
-- The registry keeps the queue's new head: the first head read that is still queued, else (all taken) the
-- queue is empty when it held no more than those (no ZRANGE needed to know either).
local removed, new_head = {}, nil
for _, id in ipairs(taken) do removed[id] = true end
for i = 1, #heads, 2 do
  if not removed[heads[i]] then new_head = heads[i + 1]; break end
end
if new_head then
  redis.call('ZADD', K_QUEUES, new_head, route)
elseif queued == #taken then
  redis.call('ZREM', K_QUEUES, route)
  redis.call('HDEL', K_ROUTES, route)
else
  queue_refresh(route)
end
if why == nil then
  -- Every head read was looked at: the queue had no more that could go now.
  if not filled and (#heads < 2 * want or any_paused or queued == #taken) then why = 'empty'
  elseif n < #taken or want == max_n then why = 'batch'
  elseif checked_all then why = 'full'
  else why = 'batch' end
end
return reply(n, why, unpack(placed))

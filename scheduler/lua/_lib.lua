-- Shared helpers, prepended by scheduler/scripts.py to every script (never run alone).
--
-- Common layout of every script:
--   KEYS[1] events stream   KEYS[2] wake list     KEYS[3] queue registry   KEYS[4] routes hash
--   KEYS[5] delayed zset    KEYS[6] deadlines zset KEYS[7] agents zset     (script keys from KEYS[8])
--   ARGV[1] prefix  ARGV[2] now_ms  ARGV[3] history maxlen  ARGV[4] events maxlen
--   ARGV[5] task ttl (s, once terminal)  ARGV[6] inbox maxlen  ARGV[7] inbox ttl (s)
--   (script arguments from ARGV[8])
-- Key builders below mirror scheduler/keys.py (the documented exception: keys that depend on
-- state read inside the script).

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local HIST_MAX = ARGV[3]
local EVENTS_MAX = ARGV[4]
local TASK_TTL = ARGV[5]
local INBOX_MAX = ARGV[6]
local INBOX_TTL = ARGV[7]
local K_EVENTS, K_WAKE, K_QUEUES, K_ROUTES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DELAYED, K_DEADLINES, K_AGENTS = KEYS[5], KEYS[6], KEYS[7]

local TERMINAL = { done = true, failed = true, canceled = true }

-- Progress goes to the global events stream (the recorder's) only at every PROGRESS_MARK-th seq: the recorder
-- keeps no progress, it only moves the row's seq, so one in PROGRESS_MARK bounds how far the row may lag.
-- Mirrors scheduler.scripts.PROGRESS_MARK_EVERY (the rebuild numbers on from the row's seq plus it).
local PROGRESS_MARK = 1024

local function k_task(id) return P .. ':task:' .. id end
local function k_hist(id) return P .. ':hist:' .. id end
local function k_queue(route) return P .. ':q:' .. route end
local function k_agent(a) return P .. ':agent:' .. a end
local function k_agent_tasks(a) return P .. ':agent:' .. a .. ':tasks' end
local function k_inbox(a) return P .. ':agent:' .. a .. ':inbox' end
local function k_watch(owner) return P .. ':watch:' .. owner end

local enc = cjson.encode

-- Integers as plain digits: Lua's tostring switches to exponent form past 14 digits. '%d' (a C long here)
-- costs a third of '%.0f' and every event formats several; a fraction (never expected) still rounds as before.
local fmt = string.format
local function int(n)
  if n % 1 == 0 then return fmt('%d', n) end
  return fmt('%.0f', n)
end

-- Once per script call; the list never holds more than one element, and a list that already holds its
-- nudge (a busy dispatch loop has not popped it yet) costs one LLEN instead of a write. No TTL: a nudge
-- nobody pops (no scheduler running) is one element, and the next dispatch loop to start takes it.
local woken = false
local function wake()
  if woken then return end
  woken = true
  if redis.call('LLEN', K_WAKE) == 0 then redis.call('LPUSH', K_WAKE, '1') end
end

-- Whether any API process has a client socket open (see api/ws/fanout.py): without one, nobody can be
-- watching, so events are not published. Read once per script call, on the first event.
local watched_memo = nil
local function watched()
  if watched_memo == nil then
    watched_memo = #redis.call('ZRANGEBYSCORE', P .. ':watching', '(' .. int(NOW), '+inf', 'LIMIT', 0, 1) > 0
  end
  return watched_memo
end

-- RFC 3339 UTC with milliseconds (days-to-civil, proleptic Gregorian). Every event of a call carries the
-- call's NOW, so the last string is kept: the arithmetic and format cost ~2.6 us, several times per task.
local iso_ms, iso_text = nil, nil
local function iso(ms)
  if ms == iso_ms then return iso_text end
  local s = math.floor(ms / 1000)
  local frac = ms - s * 1000
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  iso_ms = ms
  iso_text = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, frac)
  return iso_text
end

-- Records one event numbered `seq` (the caller stored it in the task hash): appends it to the task's
-- replay history and the global stream (progress: only every PROGRESS_MARK-th), and publishes it to the
-- owner's watch channel while anyone may watch. `body` is the payload without seq (task/progress and task/stream only).
-- The replay history of a status event is the task hash field `e{seq}` (its payload): with `held` (a
-- list) the field and value are appended to it for the caller's own HSET, else written here.
-- The other events (progress, stream pieces) go to the history stream `P:hist:{id}` (MAXLEN-bounded).
-- Both get their TTL when the task finishes, like the task hash.
-- `unstreamed`: not for the global stream (an event the recorder would find on the row already); `extra`:
-- more fields for the global stream's entry only (e.g. `queued_ms`, so the recorder needs no earlier entry).
local function emit_at(id, owner, seq, etype, status, attempt, agent, reason, body, held, unstreamed, extra)
  local payload
  local s = int(seq)
  if etype == 'task/status' then
    payload = '{"taskId":' .. enc(id) .. ',"seq":' .. s .. ',"status":"' .. status
      .. '","attempt":' .. int(attempt)
    if agent ~= '' then payload = payload .. ',"agentId":' .. enc(agent) end
    payload = payload .. ',"at":"' .. iso(NOW) .. '"'
    if reason ~= '' then payload = payload .. ',"reason":' .. enc(reason) end
    payload = payload .. '}'
  elseif string.sub(body, 2, 2) == '}' then
    payload = '{"seq":' .. s .. '}'
  else
    -- Splice seq after the opening brace so the caller's bytes are kept as they are.
    payload = '{"seq":' .. s .. ',' .. string.sub(body, 2)
  end
  local fields = { 'task_id', id, 'owner_id', owner, 'seq', s, 'type', etype, 'status', status,
    'attempt', int(attempt), 'agent_id', agent, 'at_ms', int(NOW), 'reason', reason, 'payload', payload }
  if etype ~= 'task/status' then
    -- pcall: a history left over from before a rebuild may hold higher ids; losing one replay entry
    -- is better than aborting a half-applied script.
    redis.pcall('XADD', k_hist(id), 'MAXLEN', '~', HIST_MAX, '0-' .. s, unpack(fields))
  elseif held then
    held[#held + 1] = 'e' .. s
    held[#held + 1] = payload
  else
    redis.call('HSET', k_task(id), 'e' .. s, payload)
  end
  if not unstreamed and (etype ~= 'task/progress' or seq % PROGRESS_MARK == 0) then
    if extra then
      for _, v in ipairs(extra) do fields[#fields + 1] = v end
    end
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAX, '*', unpack(fields))
  end
  if watched() then
    redis.call('PUBLISH', k_watch(owner), '{"type":"' .. etype .. '","ownerId":' .. enc(owner) .. ',"taskId":'
      .. enc(id) .. ',"seq":' .. s .. ',"payload":' .. payload .. '}')
  end
  return seq
end

-- Records one event, numbering it by bumping the task's seq.
local function emit(id, owner, etype, status, attempt, agent, reason, body)
  local seq = redis.call('HINCRBY', k_task(id), 'seq', 1)
  return emit_at(id, owner, seq, etype, status, attempt, agent, reason, body)
end

local function queue_score(prio, ord)
  return int((9 - tonumber(prio)) * 1e14 + tonumber(ord))
end

-- Puts a task id into its route's queue and keeps the registry's head score and route info.
local function queue_push(id, route, score, pin, caps)
  redis.call('ZADD', k_queue(route), score, id)
  redis.call('ZADD', K_QUEUES, 'LT', score, route)
  redis.call('HSET', K_ROUTES, route, '{"pin":' .. enc(pin) .. ',"caps":' .. caps .. '}')
end

-- After removals: the registry holds the queue's new head, or forgets the queue once empty.
local function queue_refresh(route)
  local head = redis.call('ZRANGE', k_queue(route), 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', K_QUEUES, route)
    redis.call('HDEL', K_ROUTES, route)
  else
    redis.call('ZADD', K_QUEUES, head[2], route)
  end
end

-- An agent's slots in use are the size of its slot set (SCARD), so taking or freeing one is one command.
local function take_slot(agent, id)
  redis.call('SADD', k_agent_tasks(agent), id)
end

-- Frees the slot only if the task still holds it, so a slot is never freed twice.
local function release_slot(agent, id)
  if agent == nil or agent == '' then return end
  redis.call('SREM', k_agent_tasks(agent), id)
end

local function inbox_push(agent, kind, id, attempt, payload)
  local ikey = k_inbox(agent)
  redis.call('XADD', ikey, 'MAXLEN', '~', INBOX_MAX, '*', 'kind', kind, 'task_id', id,
    'attempt', int(attempt), 'payload', payload)
  redis.call('EXPIRE', ikey, INBOX_TTL)
end

local function cancel_payload(id, attempt, reason)
  return '{"taskId":' .. enc(id) .. ',"attempt":' .. int(attempt) .. ',"reason":' .. enc(reason) .. '}'
end

-- Back to `queued` (agent lost, assign timeout): the task keeps its place (`ord`) in its queue.
local function requeue(id, attempt, reason)
  local tkey = k_task(id)
  local f = redis.call('HMGET', tkey, 'prio', 'ord', 'route', 'pin', 'caps', 'owner')
  redis.call('HSET', tkey, 'status', 'queued', 'agent', '')
  redis.call('ZREM', K_DEADLINES, id)
  queue_push(id, f[3], queue_score(f[1], f[2]), f[4], f[5])
  emit(id, f[6], 'task/status', 'queued', attempt, '', reason, '')
end

-- Retry later: `scheduled` until now + full-jitter backoff (never below the agent's own delay).
local function backoff(id, attempt, reason, base_ms, cap_ms, r, min_ms)
  local tkey = k_task(id)
  local delay = math.floor(r * math.min(cap_ms, base_ms * 2 ^ (attempt - 1)))
  if min_ms and min_ms > delay then delay = min_ms end
  redis.call('HSET', tkey, 'status', 'scheduled', 'agent', '', 'runat', int(NOW + delay))
  redis.call('ZREM', K_DEADLINES, id)
  redis.call('ZADD', K_DELAYED, int(NOW + delay), id)
  emit(id, redis.call('HGET', tkey, 'owner'), 'task/status', 'scheduled', attempt, '', reason, '')
end

-- Tasks this call finished, per terminal status: `flush_counts()` adds them to the `P:counts` hash with one
-- HINCRBY per status, so `/metrics` reads terminal counts without counting rows. Every script that can
-- finish a task calls it before returning.
local finished = {}
local function count_finished(status) finished[status] = (finished[status] or 0) + 1 end
local function flush_counts()
  for status, n in pairs(finished) do redis.call('HINCRBY', P .. ':counts', status, n) end
  finished = {}
end

-- Terminal: leaves every index, and the task hash and history expire after TASK_TTL.
local function finish(id, status, attempt, agent, reason)
  local tkey = k_task(id)
  redis.call('HSET', tkey, 'status', status)
  redis.call('ZREM', K_DEADLINES, id)
  redis.call('ZREM', K_DELAYED, id)
  local seq = emit(id, redis.call('HGET', tkey, 'owner'), 'task/status', status, attempt, agent, reason, '')
  redis.call('EXPIRE', tkey, TASK_TTL)
  redis.call('EXPIRE', k_hist(id), TASK_TTL)
  count_finished(status)
  return seq
end

-- Fencing for agent frames: the frame's (attempt, agent) must be the task's current ones.
-- Returns nil when the frame may apply, else the outcome name; plus the task fields
-- (status, attempt, agent, fin, owner, timeout, maxatt, seq, hx, ea: the attempt's `assigned` event).
local function fence(id, attempt, agent)
  local f = redis.call('HMGET', k_task(id), 'status', 'attempt', 'agent', 'fin', 'owner', 'timeout', 'maxatt', 'seq',
    'hx', 'ea')
  if not f[1] then return 'not_found', f end
  if tonumber(f[2]) ~= tonumber(attempt) then return 'stale_attempt', f end
  if TERMINAL[f[1]] then return 'terminal', f end
  if f[3] ~= agent then return 'not_assigned', f end
  return nil, f
end

-- Its agent was lost (gone past its lease or grace, never answered the submit, restarted without it):
-- not the task's fault, so the attempt is not counted against `maxatt` (`losses` is subtracted) but
-- against its own bound, so a task that kills every agent it touches still stops.
-- Returns true when the task failed ('worker_lost'), false when it was requeued.
local function lose(id, attempt, agent, reason, max_losses)
  local losses = redis.call('HINCRBY', k_task(id), 'losses', 1)
  if losses >= max_losses then
    finish(id, 'failed', attempt, agent, 'worker_lost')
    return true
  end
  requeue(id, attempt, reason)
  return false
end

-- Attempts that count against `maxatt`: every dispatch bumps `attempt`, losses are given back.
local function counted(attempt, losses)
  return tonumber(attempt) - (tonumber(losses) or 0)
end

-- Implied accept: a frame of the current attempt found the task still `assigned` (the agent sent no
-- `task/accept`): record `running` first, as the accept would have. With `writes` false the caller's own
-- HSET stores the status and f[8] (it finishes the task in the same call, so no run deadline either), and with
-- `unstreamed` the event is left out of the events stream (the caller's own entry carries it).
local function implied_accept(id, f, attempt, agent, writes, held, unstreamed)
  local seq = tonumber(f[8]) + 1
  if writes then
    local h = {}
    emit_at(id, f[5], seq, 'task/status', 'running', attempt, agent, '', '', h)
    redis.call('HSET', k_task(id), 'status', 'running', 'seq', int(seq), unpack(h))
    redis.call('ZADD', K_DEADLINES, int(NOW + tonumber(f[6]) * 1000), id)
  else
    emit_at(id, f[5], seq, 'task/status', 'running', attempt, agent, '', '', held, unstreamed)
  end
  f[1] = 'running'
  f[8] = int(seq)
end

-- Terminal end of a frame's attempt, with the task fields `fence` read: one HSET for status, seq, the
-- `extra` fields (and events' history fields the caller collected in it); the task hash and its history
-- expire after TASK_TTL (the history stream only exists once the attempt sent progress or stream pieces).
-- The caller takes the task out of `deadlines` (complete.lua: one ZREM for all the tasks of its call).
-- `streamed`: more fields for the events stream's entry (emit_at's `extra`).
local function finish_fenced(id, f, status, attempt, agent, reason, extra, streamed)
  local tkey = k_task(id)
  local seq = tonumber(f[8]) + 1
  emit_at(id, f[5], seq, 'task/status', status, attempt, agent, reason, '', extra, false, streamed)
  redis.call('HSET', tkey, 'status', status, 'seq', int(seq), unpack(extra))
  redis.call('EXPIRE', tkey, TASK_TTL)
  if f[9] then redis.call('EXPIRE', k_hist(id), TASK_TTL) end
  count_finished(status)
  return seq
end

-- The first progress or stream event of a task creates its history stream: note it (`hx`), so finishing
-- knows whether there is a stream to give a TTL.
local function note_history(id, f)
  if not f[9] then
    redis.call('HSET', k_task(id), 'hx', '1')
    f[9] = '1'
  end
end

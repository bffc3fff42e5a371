-- enqueue: store new tasks and put each in its queue (or in `delayed` when runAt is ahead).
-- KEYS[8] ord counter
-- ARGV[8..] one group of 14 per task: task id, owner, type, input JSON, priority, pinned agent or '',
--   capabilities JSON array, route id, timeout s, max attempts, run_at ms or '', attempt, seq, status hint
--   ('scheduled' keeps a rebuilt retry waiting until run_at)
-- Returns how many tasks were stored; a task id already known is skipped (idempotent).
-- Invariant: a task is in exactly one of: its queue, `delayed`, an agent's slot set, or terminal.
-- A fresh task (seq 0) records its first status as event seq 1 (published and kept for replay, not in the
-- events stream: the row has it); a rebuilt one keeps its seq.
-- Cost: per task EXISTS and HSET; the ord counter, each queue and the registry once per call.
-- (Task hash keys are built from the ids in ARGV: the documented exception in scheduler/keys.py.)
local GROUP = 14
local fresh, seen = {}, {}
for base = 8, #ARGV, GROUP do
  local id = ARGV[base]
  if not seen[id] and redis.call('EXISTS', k_task(id)) == 0 then fresh[#fresh + 1] = base end
  seen[id] = true
end
if #fresh == 0 then return 0 end
local ord = redis.call('INCRBY', KEYS[8], #fresh) - #fresh
local queued = {}  -- route -> { members = {score, id, ...}, head = lowest score, pin, caps }
local order = {}
for _, b in ipairs(fresh) do
  local id, route = ARGV[b], ARGV[b + 7]
  ord = ord + 1
  local run_at = tonumber(ARGV[b + 10])
  local due_later = run_at ~= nil and run_at > NOW
  local status = due_later and 'scheduled' or 'queued'
  local attempt = tonumber(ARGV[b + 11])
  local seq = tonumber(ARGV[b + 12])
  local emits = seq == 0
  if emits then seq = 1 end
  local h = {}
  -- A fresh task's first status is on its row already (submit commits the row before this call), so it goes
  -- to watchers and the replay history but not to the recorder's stream. `qat` (when it became queued) lets
  -- dispatch hand the recorder the wait its `assigned` event ends.
  local qat = ''
  if emits then
    emit_at(id, ARGV[b + 1], 1, 'task/status', status, attempt, '', '', '', h, true)
    if not due_later then qat = int(NOW) end
  end
  redis.call('HSET', k_task(id), 'owner', ARGV[b + 1], 'type', ARGV[b + 2], 'input', ARGV[b + 3],
    'prio', ARGV[b + 4], 'pin', ARGV[b + 5], 'caps', ARGV[b + 6], 'route', route, 'ord', int(ord),
    'timeout', ARGV[b + 8], 'maxatt', ARGV[b + 9], 'status', status, 'attempt', int(attempt),
    'seq', int(seq), 'agent', '', 'fin', '', 'runat', ARGV[b + 10], 'qat', qat, unpack(h))
  if due_later then
    redis.call('ZADD', K_DELAYED, int(run_at), id)
  else
    local score = queue_score(ARGV[b + 4], ord)
    local q = queued[route]
    if q == nil then
      q = { members = {}, head = score, pin = ARGV[b + 5], caps = ARGV[b + 6] }
      queued[route] = q
      order[#order + 1] = route
    end
    q.members[#q.members + 1] = score
    q.members[#q.members + 1] = id
    if tonumber(score) < tonumber(q.head) then q.head = score end
  end
end
for _, route in ipairs(order) do
  local q = queued[route]
  redis.call('ZADD', k_queue(route), unpack(q.members))
  redis.call('ZADD', K_QUEUES, 'LT', q.head, route)
  redis.call('HSET', K_ROUTES, route, '{"pin":' .. enc(q.pin) .. ',"caps":' .. q.caps .. '}')
end
if #order > 0 then wake() end
return #fresh

-- progress: record progress events of the current attempt (status unchanged). Several frames per call.
-- ARGV[8]: every frame in one string (one argument, not four per frame: the client's packing of each
-- argument cost more than the script's parsing): per frame a header line
-- "<task id> <attempt> <agent id> <payload length>\n", then the TaskProgress JSON without seq (that many
-- bytes, copied as they are; ids never hold spaces or newlines, their pattern forbids both).
-- Returns a flat list, 3 per frame: {outcome, seq or '', status}.
-- A task still `assigned` records `running` first (the accept the progress implies).
-- Invariant: progress is ordered with every other event of the task by seq; frames of one task in one
-- call are applied in the order given.
-- (Task hash keys are built from the ids in ARGV: the documented exception in scheduler/keys.py.)
local out = {}
local frames = ARGV[8]
local at = 1
while at <= #frames do
  local id, attempt, agent, size, body_at = string.match(frames, '^(%S+) (%d+) (%S+) (%d+)\n()', at)
  if not id then return redis.error_reply('ERR malformed progress frames at byte ' .. at) end
  at = body_at + tonumber(size)
  local refused, f = fence(id, attempt, agent)
  if refused then
    out[#out + 1], out[#out + 2], out[#out + 3] = refused, '', f[1] or ''
  else
    if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, true) end
    note_history(id, f)
    local seq = emit(id, f[5], 'task/progress', '', attempt, agent, '', string.sub(frames, body_at, at - 1))
    out[#out + 1], out[#out + 2], out[#out + 3] = 'ok', seq, f[1]
  end
end
return out

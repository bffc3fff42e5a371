-- progress: record progress events of the current attempt (status unchanged). Several frames per call.
-- ARGV[8..] one group of 4 per frame: task id, attempt, agent id, TaskProgress JSON without seq
-- Returns a flat list, 3 per frame: {outcome, seq or '', status}.
-- A task still `assigned` records `running` first (the accept the progress implies).
-- Invariant: progress is ordered with every other event of the task by seq; frames of one task in one
-- call are applied in the order given.
-- (Task hash keys are built from the ids in ARGV: the documented exception in scheduler/keys.py.)
local out = {}
for b = 8, #ARGV, 4 do
  local id, attempt, agent = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local refused, f = fence(id, attempt, agent)
  if refused then
    out[#out + 1], out[#out + 2], out[#out + 3] = refused, '', f[1] or ''
  else
    if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, true) end
    note_history(id, f)
    local seq = emit(id, f[5], 'task/progress', '', attempt, agent, '', ARGV[b + 3])
    out[#out + 1], out[#out + 2], out[#out + 3] = 'ok', seq, f[1]
  end
end
return out

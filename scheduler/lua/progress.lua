-- progress: record one progress event of the current attempt (status unchanged).
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id  [11] TaskProgress JSON without seq
-- Returns {outcome, seq or '', status}.
-- A task still `assigned` records `running` first (the accept the progress implies).
-- Invariant: progress is ordered with every other event of the task by seq.
local id, attempt, agent = ARGV[8], ARGV[9], ARGV[10]
local refused, f = fence(id, attempt, agent)
if refused then return { refused, '', f[1] or '' } end
if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, true) end
note_history(id, f)
local seq = emit(id, f[5], 'task/progress', '', attempt, agent, '', ARGV[11])
return { 'ok', seq, f[1] }

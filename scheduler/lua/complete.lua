-- complete: the agent's result arrived (assigned|running -> done); frees the slot.
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id
-- Returns {outcome, seq or '', status}. A repeat of the finishing frame is 'duplicate'.
-- A task still `assigned` records `running` first (the accept the result implies), then `done`.
-- A task canceled while this attempt ran (same attempt and agent) takes the attempt's result once, as the
-- partial output of the canceled task: 'ok' with status 'canceled', no event, the status stays.
-- Invariant: a task finishes once; the slot is freed exactly once.
local id, attempt, agent = ARGV[8], ARGV[9], ARGV[10]
local refused, f = fence(id, attempt, agent)
if f[4] == attempt .. ':' .. agent .. ':done' then return { 'duplicate', '', f[1] } end
local fin_this = string.sub(f[4] or '', 1, #attempt + 1) == attempt .. ':'
if refused == 'terminal' and f[1] == 'canceled' and f[3] == agent and not fin_this then
  -- cancel.lua already freed the slot and finished the task.
  redis.call('HSET', KEYS[8], 'fin', attempt .. ':' .. agent .. ':done')
  return { 'ok', '', 'canceled' }
end
if refused then return { refused, '', f[1] or '' } end
release_slot(agent, id)
if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, false) end
local seq = finish_fenced(id, f, 'done', attempt, agent, '', { 'fin', attempt .. ':' .. agent .. ':done' })
wake()
return { 'ok', seq, 'done' }

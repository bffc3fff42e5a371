-- complete: the agent's result arrived (assigned|running -> done); frees the slot.
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id
-- KEYS[9] pending-output key, ARGV[11] the output JSON, ARGV[12] its keep ms (both optional): kept until
-- the database has it, so a result whose commit died with an API replica can still be filled in.
-- Returns {outcome, seq or '', status}. A repeat of the finishing frame is 'duplicate'.
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
redis.call('HSET', KEYS[8], 'fin', attempt .. ':' .. agent .. ':done')
if KEYS[9] and ARGV[11] then redis.call('SET', KEYS[9], ARGV[11], 'PX', ARGV[12]) end
local seq = finish(id, 'done', attempt, agent, '')
wake()
return { 'ok', seq, 'done' }

-- complete: the agent's result arrived (assigned|running -> done); frees the slot.
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id
-- Returns {outcome, seq or '', status}. A repeat of the finishing frame is 'duplicate'.
-- Invariant: a task finishes once; the slot is freed exactly once.
local id, attempt, agent = ARGV[8], ARGV[9], ARGV[10]
local refused, f = fence(id, attempt, agent)
if f[4] == attempt .. ':' .. agent .. ':done' then return { 'duplicate', '', f[1] } end
if refused then return { refused, '', f[1] or '' } end
release_slot(agent, id)
redis.call('HSET', KEYS[8], 'fin', attempt .. ':' .. agent .. ':done')
local seq = finish(id, 'done', attempt, agent, '')
wake()
return { 'ok', seq, 'done' }

-- complete: agents' results arrived (assigned|running -> done); frees the slots. Several tasks per call.
-- ARGV[8] how long to keep each output, ms (0: not kept)
-- ARGV[9..] one group of 5 per result: task id, attempt, agent id, output JSON ('' when not kept), the id
-- of the attempt's submit entry in the agent's inbox ('' when none): acked and deleted here whatever the
-- outcome (the agent had the submit; the entry has served its purpose), so the API makes no call for it
-- An output is kept at `P:out:{id}` until the database has it, so a result whose commit died with an
-- API replica can still be filled in by the reconciler.
-- Returns a flat list, 5 per result: {outcome, seq or '', status, assigned event, running event}. The last
-- two ('' when absent) are the attempt's earlier status events as the task hash keeps them (the `assigned`
-- one, and the `running` one when this call implied the accept): the result writer puts them on the row
-- with the outcome, so the recorder finds nothing left to write for a quick task. A repeat of the
-- finishing frame is 'duplicate'. A task still `assigned` records `running` first (the accept the result implies), then `done`;
-- in the events stream both are the one `done` entry (its `running` field holds the implied event's payload).
-- A task canceled while this attempt ran (same attempt and agent) takes the attempt's result once, as the
-- partial output of the canceled task: 'ok' with status 'canceled', no event, the status stays.
-- Invariant: a task finishes once; the slot is freed exactly once.
-- (Task hash and output keys are built from the ids in ARGV: the documented exception in scheduler/keys.py.)
local keep_ms = tonumber(ARGV[8])
local out, done, slots, finished_ids, entries = {}, 0, {}, {}, {}
for b = 9, #ARGV, 5 do
  local id, attempt, agent, output, entry = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if entry ~= '' then
    local ids = entries[agent]
    if ids == nil then
      ids = {}
      entries[agent] = ids
    end
    ids[#ids + 1] = entry
  end
  local refused, f = fence(id, attempt, agent)
  local fin_this = string.sub(f[4] or '', 1, #attempt + 1) == attempt .. ':'
  local r
  if f[4] == attempt .. ':' .. agent .. ':done' then
    r = { 'duplicate', '', f[1], '', '' }
  elseif refused == 'terminal' and f[1] == 'canceled' and f[3] == agent and not fin_this then
    -- cancel.lua already freed the slot and finished the task.
    redis.call('HSET', k_task(id), 'fin', attempt .. ':' .. agent .. ':done')
    r = { 'ok', '', 'canceled', '', '' }
  elseif refused then
    r = { refused, '', f[1] or '', '', '' }
  else
    local extra = { 'fin', attempt .. ':' .. agent .. ':done' }
    local running, streamed = '', nil
    if f[1] == 'assigned' then
      -- The implied `running` rides the `done` entry of the events stream (field `running`, its payload; the
      -- reader makes it the event before `done`): one entry per result, not two.
      implied_accept(id, f, attempt, agent, false, extra, true)
      running = extra[4]
      streamed = { 'running', running }
    end
    local seq = finish_fenced(id, f, 'done', attempt, agent, '', extra, streamed)
    if keep_ms > 0 and output ~= '' then redis.call('SET', P .. ':out:' .. id, output, 'PX', keep_ms) end
    local freed = slots[agent]
    if freed == nil then
      freed = {}
      slots[agent] = freed
    end
    freed[#freed + 1] = id
    finished_ids[#finished_ids + 1] = id
    r = { 'ok', seq, 'done', f[10] or '', running }
    done = done + 1
  end
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = r[4]
  out[#out + 1] = r[5]
end
-- Inbox entries acked once per agent (one XACK and one XDEL for a batch of results, as the API's own ack was).
for agent, ids in pairs(entries) do
  redis.call('XACK', k_inbox(agent), 'deliver', unpack(ids))
  redis.call('XDEL', k_inbox(agent), unpack(ids))
end
-- Slots freed once per agent (SREM is idempotent: a slot is never freed twice).
for agent, ids in pairs(slots) do redis.call('SREM', k_agent_tasks(agent), unpack(ids)) end
-- Out of `deadlines` at once too (finish_fenced leaves it to the caller).
if #finished_ids > 0 then redis.call('ZREM', K_DEADLINES, unpack(finished_ids)) end
-- A freed slot matters to the dispatcher only while some task waits in a queue (the registry drops empty ones).
if done > 0 and redis.call('EXISTS', K_QUEUES) == 1 then wake() end
flush_counts()
return out

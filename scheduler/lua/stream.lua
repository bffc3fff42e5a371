-- stream: append one piece of the current attempt's text stream (LLM tokens); status unchanged.
-- KEYS[8] task hash   ARGV[8] task id  [9] attempt  [10] agent id  [11] offset (UTF-8 bytes before the
--   piece)  [12] delta (UTF-8 text)
-- Returns {outcome, seq or expected offset or '', status}: 'ok' (seq of the event), 'duplicate' (nothing
-- new), 'stream_gap' (the expected offset: the piece starts beyond the stream's end), 'bad_offset' (the
-- expected offset: the new part would start inside a UTF-8 character), or a fencing refusal.
-- Invariant: per attempt, the emitted pieces tile the stream's bytes exactly once, in order; `slen` (its
-- byte length) only grows, and dispatch resets it for a new attempt. A task still `assigned` records
-- `running` first (the accept the piece implies), once the piece is known to apply.
local id, attempt, agent = ARGV[8], ARGV[9], ARGV[10]
local refused, f = fence(id, attempt, agent)
if refused then return { refused, '', f[1] or '' } end
local have = tonumber(redis.call('HGET', KEYS[8], 'slen') or '0') or 0
local offset, delta = tonumber(ARGV[11]), ARGV[12]
if offset > have then return { 'stream_gap', int(have), f[1] } end
if offset + #delta <= have then return { 'duplicate', '', f[1] } end
local skip = have - offset
if skip > 0 then
  -- Keep only the new part; it must start on a character boundary (not a 10xxxxxx continuation byte).
  local b = string.byte(delta, skip + 1)
  if b >= 0x80 and b < 0xC0 then return { 'bad_offset', int(have), f[1] } end
  delta = string.sub(delta, skip + 1)
end
if f[1] == 'assigned' then implied_accept(id, f, attempt, agent, true) end
redis.call('HSET', KEYS[8], 'slen', int(have + #delta))
local body = '{"taskId":' .. enc(id) .. ',"attempt":' .. int(attempt) .. ',"offset":' .. int(have)
  .. ',"delta":' .. enc(delta) .. '}'
note_history(id, f)
local seq = emit(id, f[5], 'task/stream', '', attempt, agent, '', body)
return { 'ok', seq, f[1] }

-- Fixed-window counter: one atomic step, so every API replica shares one count.
--
-- KEYS[1]  the counter key of (bucket, subject)
-- KEYS[2]  optional: a minimum-version key (a number); the hit is refused when ARGV[4] is below it
-- KEYS[3..] optional: revocation keys (strings); the hit is refused when any of them exists
-- ARGV[1]  increment (1 to count a hit, 0 to only read the count)
-- ARGV[2]  window length in milliseconds (the key expires when the window ends)
-- ARGV[3]  the count above which the caller refuses: the window's remaining time is read only then
-- ARGV[4]  with KEYS[2]: the caller's version
--
-- Returns {count, pttl_ms}: the count in the current window after the increment, and the
-- milliseconds until the window ends when the count is above ARGV[3] (else 0: the caller allows and
-- does not need it); {-1, 0} when a guard key refused the hit (nothing counted). The guard keys let an
-- authenticated request check its token's revocation and count its rate in one round trip.
-- A hit that is allowed costs INCRBY alone (plus MGET with guard keys): the one call a POST makes.
-- Invariant: a counter key always carries a TTL, so nothing here grows without bound (the INCRBY that
-- creates it is followed by its PEXPIRE in this same atomic step).

local incr = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local refuse_above = tonumber(ARGV[3])

if #KEYS > 1 then
  -- Every guard key is a string: one MGET reads the version and whether any revocation exists.
  local guards = redis.call('MGET', unpack(KEYS, 2))
  local min_version = guards[1]
  if min_version and tonumber(ARGV[4]) < tonumber(min_version) then
    return {-1, 0}
  end
  for i = 2, #guards do
    if guards[i] then
      return {-1, 0}
    end
  end
end

local count
if incr == 0 then
  count = tonumber(redis.call('GET', KEYS[1]) or '0')
else
  count = redis.call('INCRBY', KEYS[1], incr)
  if count == incr then
    -- The key was just created: its window starts now.
    redis.call('PEXPIRE', KEYS[1], window_ms)
    return {count, count > refuse_above and window_ms or 0}
  end
end
if count <= refuse_above then
  return {count, 0}
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 and incr > 0 then
  -- Not expected (the creating call sets it); a key without a TTL gets one rather than living forever.
  redis.call('PEXPIRE', KEYS[1], window_ms)
  ttl = window_ms
end
if ttl < 0 then ttl = 0 end
return {count, ttl}

-- Fixed-window counter: one atomic step, so every API replica shares one count.
--
-- KEYS[1]  the counter key of (bucket, subject)
-- KEYS[2]  optional: a minimum-version key (a number); the hit is refused when ARGV[3] is below it
-- KEYS[3..] optional: revocation keys; the hit is refused when any of them exists
-- ARGV[1]  increment (1 to count a hit, 0 to only read the count)
-- ARGV[2]  window length in milliseconds (the key expires when the window ends)
-- ARGV[3]  with KEYS[2]: the caller's version
--
-- Returns {count, pttl_ms}: the count in the current window after the increment, and the
-- milliseconds until the window ends (0 when there is no window yet); {-1, 0} when a guard key
-- refused the hit (nothing counted). The guard keys let an authenticated request check its
-- token's revocation and count its rate in one round trip.
-- Invariant: a counter key always carries a TTL, so nothing here grows without bound.

local incr = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])

if #KEYS > 1 then
  local min_version = redis.call('GET', KEYS[2])
  if min_version and tonumber(ARGV[3]) < tonumber(min_version) then
    return {-1, 0}
  end
  if #KEYS > 2 and redis.call('EXISTS', unpack(KEYS, 3)) > 0 then
    return {-1, 0}
  end
end

if incr == 0 then
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = 0 end
  return {current, ttl}
end

local count = redis.call('INCRBY', KEYS[1], incr)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window_ms)
  ttl = window_ms
end
return {count, ttl}

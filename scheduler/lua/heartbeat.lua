-- heartbeat (agent_online): register or refresh an agent's presence and extend its lease.
-- KEYS[8] agent hash  KEYS[9] agent slot set  KEYS[10] agent inbox
-- ARGV[8] agent id  [9] owner  [10] capabilities JSON  [11] concurrency  [12] accepting '1'|'0'
-- ARGV[13] lease ms  [14] extra keep ms (agent keys outlive the lease by this much)
-- ARGV[15] session id or '' (kept as `sess`: only the latest session's close starts a reconnect grace)
-- Returns 1 when the agent came online (was not, or its lease had run out), else 0.
-- Invariant: `running` counts the slot set; a heartbeat never changes either.
local agent = ARGV[8]
local lease = redis.call('ZSCORE', K_AGENTS, agent)
local was_online = lease ~= false and tonumber(lease) > NOW
local old = redis.call('HMGET', KEYS[8], 'conc', 'accepting')
redis.call('HSET', KEYS[8], 'owner', ARGV[9], 'caps', ARGV[10], 'conc', ARGV[11], 'accepting', ARGV[12])
redis.call('HSETNX', KEYS[8], 'running', 0)
if ARGV[15] and ARGV[15] ~= '' then redis.call('HSET', KEYS[8], 'sess', ARGV[15]) end
local lease_ms = tonumber(ARGV[13])
redis.call('ZADD', K_AGENTS, int(NOW + lease_ms), agent)
local keep = lease_ms + tonumber(ARGV[14])
redis.call('PEXPIRE', KEYS[8], keep)
if redis.call('EXISTS', KEYS[9]) == 1 then redis.call('PEXPIRE', KEYS[9], keep) end
redis.pcall('XGROUP', 'CREATE', KEYS[10], 'deliver', '0', 'MKSTREAM')
redis.call('EXPIRE', KEYS[10], INBOX_TTL)
if not was_online or old[1] ~= ARGV[11] or old[2] ~= ARGV[12] then wake() end
if was_online then return 0 end
return 1

-- claim_one.lua: claim one avatar now, for a manual trigger (TriggerSchedule).
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:due       ZSET avatar_id -> due epoch seconds
-- KEYS[2] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[3] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- ARGV[1] avatar_id
-- ARGV[2] lease_seconds  lease length, counted from Redis TIME
-- ARGV[3] token          unique for this claim
--
-- Returns "<planned>:<token>" with planned = TIME in whole seconds, or nil when
-- the avatar is already in flight (a dispatch is in progress: refuse). The
-- avatar need not be in the due set (a paused avatar may be triggered).

if redis.replicate_commands then
  redis.replicate_commands()
end

if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local planned = t[1]
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], string.format('%.6f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ':' .. planned)
return planned .. ':' .. ARGV[3]

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
-- Returns "<planned>:<token>", or nil when the avatar is already in flight (a
-- dispatch is in progress: refuse). The avatar need not be in the due set (a
-- paused avatar may be triggered).
--
-- planned is TIME in milliseconds ("<seconds>.<ms>"), never on a whole second:
-- auto slots are whole seconds, so a trigger's idempotency key never equals
-- the key of an auto slot dispatched in the same second, and two triggers in
-- one second get two keys (Action would otherwise drop the second as a repeat):
-- a trigger is refused while the last one is in flight, and a dispatch (an
-- Action call and a MySQL commit) takes well over a millisecond.

if redis.replicate_commands then
  redis.replicate_commands()
end

if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ms = math.floor(tonumber(t[2]) / 1000)
if ms == 0 then
  ms = 1
end
local planned = t[1] .. '.' .. string.format('%03d', ms)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], string.format('%.6f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ':' .. planned)
return planned .. ':' .. ARGV[3]

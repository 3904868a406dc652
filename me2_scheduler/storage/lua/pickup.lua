-- pickup.lua: a worker confirms the claim it popped from the ready list is still
-- current, and optionally restarts its lease from now.
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[2] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- ARGV[1] avatar_id
-- ARGV[2] token          the token of the popped claim
-- ARGV[3] lease_seconds  new lease length from Redis TIME, or "" to keep the lease
--
-- Returns 1 when the claim is current, 0 when it is stale (its lease expired and
-- was released, or the avatar was removed): the worker must not dispatch it.
-- The lease restarts at pick-up because a claim may wait in the ready list.

if redis.replicate_commands then
  redis.replicate_commands()
end

local lease = redis.call('HGET', KEYS[2], ARGV[1])
if not lease then
  return 0
end
local sep = string.find(lease, ':', 1, true)
if not sep or string.sub(lease, 1, sep - 1) ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('ZADD', KEYS[1], 'XX', string.format('%.6f', now + tonumber(ARGV[3])), ARGV[1])
end
return 1
